//! Conversions at the boundary: int32/float arrays in (copied, so that no numpy borrow outlives
//! a GIL release, except probabilities: borrowed read-only through rust-numpy's borrow
//! tracking), read-only zero-copy views and owned arrays out.
#![allow(unsafe_code)]

use std::mem::MaybeUninit;

use fastdec_core::{token_ids_from_i32, TokenId};
use numpy::ndarray::{ArrayView1, ArrayView2};
use numpy::{
    Element, PyArray1, PyArray2, PyArrayDyn, PyArrayMethods, PyReadonlyArray1, PyReadonlyArrayDyn,
    PyUntypedArray, PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

use crate::error::to_py;

/// Work below this many elements runs with the GIL held: releasing and re-taking it costs
/// more than an 81-node tree step (about 0.1-0.2 us per release measured on CPython 3.11).
pub const DETACH_MIN_WORK: usize = 1 << 14;

/// Runs `f` with the GIL released when `work` is large enough to be worth it.
pub fn maybe_detach<T: Send>(py: Python<'_>, work: usize, f: impl FnOnce() -> T + Send) -> T {
    if work >= DETACH_MIN_WORK {
        py.detach(f)
    } else {
        f()
    }
}

/// Reads a 1-D sequence of integers as int32: numpy int32 arrays on the fast path, any other
/// integer sequence (lists, int64 arrays) element by element with range checks.
pub fn i32_vec(obj: &Bound<'_, PyAny>, what: &'static str) -> PyResult<Vec<i32>> {
    if let Ok(arr) = obj.cast::<PyArray1<i32>>() {
        // SAFETY: we are attached to the interpreter and copy the data before returning, so no
        // Rust reference outlives this call; this crate never hands out mutable numpy borrows
        // across calls. (rust-numpy's borrow tracking would cost ~0.2 us per array here.)
        if let Ok(s) = unsafe { arr.as_slice() } {
            return Ok(s.to_vec());
        }
        let ro: PyReadonlyArray1<'_, i32> = arr.readonly();
        return Ok(ro.as_array().iter().copied().collect());
    }
    if obj.is_instance_of::<pyo3::types::PyString>() || obj.is_instance_of::<pyo3::types::PyBytes>()
    {
        return Err(pyo3::exceptions::PyTypeError::new_err(format!(
            "{what} must be a sequence of integers, got str"
        )));
    }
    if let Ok(arr) = obj.cast::<numpy::PyUntypedArray>() {
        if arr.ndim() != 1 {
            return Err(PyValueError::new_err(format!(
                "{what} must be 1-D, got {} dimensions",
                arr.ndim()
            )));
        }
    }
    let wide: Vec<i64> = obj.extract().map_err(|_| {
        pyo3::exceptions::PyTypeError::new_err(format!(
            "{what} must be a 1-D sequence of integers, got {}",
            obj.get_type()
                .name()
                .map_or_else(|_| "?".into(), |n| n.to_string())
        ))
    })?;
    wide.iter()
        .enumerate()
        .map(|(i, &v)| {
            i32::try_from(v).map_err(|_| {
                PyValueError::new_err(format!("{what} {v} at index {i} does not fit in int32"))
            })
        })
        .collect()
}

/// A non-negative integer argument as usize. Arguments are taken as i128 so that a negative or
/// huge value raises `ValueError` naming the argument (PyO3's usize extraction raises
/// `OverflowError`); only ints beyond 2^127 still do.
pub fn count(value: i128, name: &str) -> PyResult<usize> {
    usize::try_from(value)
        .map_err(|_| PyValueError::new_err(format!("invalid {name} = {value}: must be >= 0")))
}

/// A token id argument (`0..=i32::MAX`).
pub fn token_arg(value: i128, name: &str) -> PyResult<TokenId> {
    TokenId::try_from(value)
        .ok()
        .filter(|&t| t <= fastdec_core::MAX_TOKEN_ID)
        .ok_or_else(|| {
            PyValueError::new_err(format!(
                "invalid {name} = {value}: token ids must be in [0, 2147483647]"
            ))
        })
}

/// Reads token ids (int32, non-negative).
pub fn token_vec(obj: &Bound<'_, PyAny>, what: &'static str) -> PyResult<Vec<TokenId>> {
    if let Ok(arr) = obj.cast::<PyArray1<i32>>() {
        // SAFETY: as in `i32_vec`: attached, and the data is copied before returning.
        if let Ok(s) = unsafe { arr.as_slice() } {
            return token_ids_from_i32(s, what).map_err(to_py);
        }
    }
    token_ids_from_i32(&i32_vec(obj, what)?, what).map_err(to_py)
}

/// Reads a 1-D sequence of floats as f32.
pub fn f32_vec(obj: &Bound<'_, PyAny>, what: &'static str) -> PyResult<Vec<f32>> {
    if let Ok(arr) = obj.cast::<PyArray1<f32>>() {
        // SAFETY: as in `i32_vec`: attached, and the data is copied (one memcpy for a contiguous
        // array) before returning.
        if let Ok(s) = unsafe { arr.as_slice() } {
            return Ok(s.to_vec());
        }
        return Ok(arr.readonly().as_array().iter().copied().collect());
    }
    let wide: Vec<f64> = obj.extract().map_err(|_| {
        pyo3::exceptions::PyTypeError::new_err(format!("{what} must be a 1-D sequence of floats"))
    })?;
    Ok(wide.into_iter().map(|v| v as f32).collect())
}

/// Marks a freshly created array read-only: views into a tree's shared buffers must not be
/// written, since every tree built from one template shares them.
fn readonly<'py, T: Element, D: numpy::ndarray::Dimension>(
    arr: Bound<'py, numpy::PyArray<T, D>>,
) -> Bound<'py, numpy::PyArray<T, D>> {
    // SAFETY: `arr` was created just now and nothing else refers to it yet, so clearing the flag
    // cannot invalidate a borrow; the pointer is a live numpy array.
    unsafe {
        (*numpy::npyffi::_PyArray_GET_ITEM_DATA(arr.as_array_ptr())).flags &=
            !numpy::npyffi::NPY_ARRAY_WRITEABLE;
    }
    arr
}

/// A new `[rows, cols]` array whose every element `fill` writes (numpy's allocation is left
/// uninitialised; no intermediate Vec). The GIL is released for large fills.
pub fn new_array2_uninit<'py, T: Element + Send, E: Send>(
    py: Python<'py>,
    rows: usize,
    cols: usize,
    fill: impl FnOnce(&mut [MaybeUninit<T>]) -> Result<(), E> + Send,
) -> Result<Bound<'py, PyArray2<T>>, E> {
    // SAFETY: `new` leaves the memory uninitialised, which `MaybeUninit` permits; the array is
    // new, C-contiguous and not yet visible to Python, and `fill` must write every element
    // (write_additive_mask does) before the array is returned.
    let arr = unsafe { PyArray2::<T>::new(py, [rows, cols], false) };
    let data =
        unsafe { std::slice::from_raw_parts_mut(arr.data().cast::<MaybeUninit<T>>(), rows * cols) };
    maybe_detach(py, rows * cols, || fill(data))?;
    Ok(arr)
}

/// A new 1-D array holding `data`.
pub fn array1_from<'py, T: Element + Copy>(py: Python<'py>, data: &[T]) -> Bound<'py, PyArray1<T>> {
    PyArray1::from_slice(py, data)
}

/// A read-only 1-D numpy view of `data`, kept alive by `owner`.
///
/// `data` must live inside `owner` (directly or behind an `Arc` it holds) and never be mutated
/// or reallocated while `owner` lives: true for the frozen pyclasses of this crate.
pub fn view1<'py, T: Element>(owner: &Bound<'py, PyAny>, data: &[T]) -> Bound<'py, PyArray1<T>> {
    let view = ArrayView1::from(data);
    // SAFETY: per the contract above, `owner` (set as the array's base) keeps `data` alive and
    // unchanged for as long as the array exists.
    readonly(unsafe { PyArray1::borrow_from_array(&view, owner.clone()) })
}

/// A read-only `[rows, cols]` numpy view of `data`, kept alive by `owner` (contract of [`view1`]).
pub fn view2<'py, T: Element>(
    owner: &Bound<'py, PyAny>,
    data: &[T],
    rows: usize,
    cols: usize,
) -> Bound<'py, PyArray2<T>> {
    let view = ArrayView2::from_shape((rows, cols), data).expect("rows * cols == data.len()");
    // SAFETY: as in `view1`.
    readonly(unsafe { PyArray2::borrow_from_array(&view, owner.clone()) })
}

/// Token ids as int32 without a copy.
pub fn tokens_as_i32(tokens: &[TokenId]) -> &[i32] {
    // SAFETY: u32 and i32 have the same size and alignment, and every TokenId is at most
    // i32::MAX (checked when trees are built), so the values read back unchanged.
    unsafe { std::slice::from_raw_parts(tokens.as_ptr().cast::<i32>(), tokens.len()) }
}

/// A C-contiguous float32 or float64 numpy array, borrowed read-only: probabilities are read in
/// place (a step reads a few of their rows; copying all of them would cost more than that).
pub enum FloatArray<'py> {
    /// float32 values.
    F32(PyReadonlyArrayDyn<'py, f32>),
    /// float64 values.
    F64(PyReadonlyArrayDyn<'py, f64>),
}

impl FloatArray<'_> {
    /// The array's shape.
    pub fn shape(&self) -> &[usize] {
        match self {
            FloatArray::F32(a) => a.shape(),
            FloatArray::F64(a) => a.shape(),
        }
    }
}

/// Borrows a float32 or float64 numpy array of `ndim` dimensions (a non-contiguous one is first
/// copied by `numpy.ascontiguousarray`).
pub fn float_array<'py>(
    obj: &Bound<'py, PyAny>,
    ndim: usize,
    what: &str,
) -> PyResult<FloatArray<'py>> {
    let not_floats = || {
        PyTypeError::new_err(format!(
            "{what} must be a float32 or float64 numpy array, got {}",
            describe(obj)
        ))
    };
    let arr = obj.cast::<PyUntypedArray>().map_err(|_| not_floats())?;
    if arr.ndim() != ndim {
        return Err(PyValueError::new_err(format!(
            "{what} must have {ndim} dimensions, got shape {}",
            shape_str(arr.shape())
        )));
    }
    let arr = if arr.is_c_contiguous() {
        arr.clone()
    } else {
        let numpy = obj.py().import("numpy")?;
        numpy
            .call_method1("ascontiguousarray", (arr,))?
            .cast_into::<PyUntypedArray>()?
    };
    if let Ok(a) = arr.cast::<PyArrayDyn<f32>>() {
        return Ok(FloatArray::F32(a.try_readonly().map_err(borrowed)?));
    }
    if let Ok(a) = arr.cast::<PyArrayDyn<f64>>() {
        return Ok(FloatArray::F64(a.try_readonly().map_err(borrowed)?));
    }
    Err(not_floats())
}

/// Runs `$body` with `$p` bound to the values of a [`FloatArray`] as a slice of its own type.
macro_rules! with_floats {
    ($arr:expr, |$p:ident| $body:expr) => {
        match $arr {
            $crate::convert::FloatArray::F32(a) => {
                let $p = a.as_slice().map_err($crate::convert::not_contiguous)?;
                $body
            }
            $crate::convert::FloatArray::F64(a) => {
                let $p = a.as_slice().map_err($crate::convert::not_contiguous)?;
                $body
            }
        }
    };
}
pub(crate) use with_floats;

/// Reads `[..shape, 2]` float64 pairs (any array-like numpy can convert; copied: they are few).
pub fn coin_pairs(obj: &Bound<'_, PyAny>, shape: &[usize]) -> PyResult<Vec<[f64; 2]>> {
    let numpy = obj.py().import("numpy")?;
    let arr = numpy.call_method1("ascontiguousarray", (obj, "float64"))?;
    let arr = arr.cast::<PyArrayDyn<f64>>()?;
    let ro = arr.try_readonly().map_err(borrowed)?;
    let want: Vec<usize> = shape.iter().copied().chain([2]).collect();
    if ro.shape() != want.as_slice() {
        return Err(PyValueError::new_err(format!(
            "coins must have shape {}, got {}",
            shape_str(&want),
            shape_str(ro.shape())
        )));
    }
    let flat = ro.as_slice().map_err(not_contiguous)?;
    Ok(flat.chunks_exact(2).map(|c| [c[0], c[1]]).collect())
}

/// A shape as Python prints it: `(3, 2)`, `(4,)`.
fn shape_str(shape: &[usize]) -> String {
    match shape {
        [one] => format!("({one},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn describe(obj: &Bound<'_, PyAny>) -> String {
    match obj.cast::<PyUntypedArray>() {
        Ok(a) => format!("dtype {}", a.dtype()),
        Err(_) => obj
            .get_type()
            .name()
            .map_or_else(|_| "?".into(), |n| n.to_string()),
    }
}

fn borrowed(e: numpy::BorrowError) -> PyErr {
    PyValueError::new_err(format!("cannot read the array: {e}"))
}

/// The error of a slice of an array known to be contiguous (unreachable in practice).
pub fn not_contiguous(e: numpy::AsSliceError) -> PyErr {
    PyValueError::new_err(format!("cannot read the array: {e}"))
}
