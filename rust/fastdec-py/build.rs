//! Copies the CUDA kernel sources (`cuda/*.cu` at the repository root) into OUT_DIR, from where
//! maturin's `include = [{ from = "out-dir", to = "fastdec/cuda/" }]` ships them inside the wheel.
//! A plain `include` would keep the project-relative path and land them as `site-packages/cuda/`,
//! colliding with NVIDIA's `cuda` package.
use std::{env, fs, path::PathBuf};

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out = PathBuf::from(env::var("OUT_DIR").expect("set by cargo"));
    let src = manifest.join("../../cuda");
    println!("cargo:rerun-if-changed={}", src.display());
    // Start empty: a kernel deleted from cuda/ must not linger in OUT_DIR and ship in the wheel.
    for entry in fs::read_dir(&out).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "cu" || e == "cuh") {
            fs::remove_file(&path).expect("remove a stale CUDA source from OUT_DIR");
        }
    }
    let Ok(entries) = fs::read_dir(&src) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "cu" || e == "cuh") {
            println!("cargo:rerun-if-changed={}", path.display());
            let name = path.file_name().expect("a file entry has a name");
            fs::copy(&path, out.join(name)).expect("copy a CUDA source into OUT_DIR");
        }
    }
}
