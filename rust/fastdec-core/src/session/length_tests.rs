//! Tests of the draft-length controller (`length`).

use super::*;

const R0: RowState = RowState {
    streak: 0,
    matched: 0,
};

#[test]
fn streaks_grow_while_chains_are_right_and_restart_at_a_miss() {
    assert_eq!(next_streak(0, 1, 1), 1); // no draft, the chain's first token was right
    assert_eq!(next_streak(5, 4, 4), 9); // a draft of 3 accepted, then the bonus predicted
    assert_eq!(next_streak(9, 2, 4), 2); // the chain missed the third token
    assert_eq!(next_streak(9, 0, 1), 0);
    assert_eq!(next_streak(u32::MAX, 3, 3), u32::MAX);
}

#[test]
fn observe_learns_every_token_the_output_decides() {
    let mut config = LengthConfig::new(4);
    config.decay = 1.0;
    let mut l = DraftLength::new(config).unwrap();
    // nothing drafted, one token emitted: the chain's first token is decided, not the second
    assert_eq!(l.observe(&[7, 8, 9], &[1.0; 3], &[7], R0), 1);
    assert_eq!((l.depths[0].tried, l.depths[1].tried), (1.0, 0.0));
    // two accepted and a bonus the chain also predicted: three hits, the fourth undecided
    assert_eq!(l.observe(&[1, 2, 3, 4], &[1.0; 4], &[1, 2, 3], R0), 3);
    assert_eq!(
        l.depths.iter().map(|r| r.tried).collect::<Vec<_>>(),
        [2.0, 1.0, 1.0, 0.0]
    );
    // a miss at the second token: one hit, one miss, nothing after
    assert_eq!(l.observe(&[1, 5, 6], &[1.0; 3], &[1, 2], R0), 1);
    assert_eq!((l.depths[1].accepted, l.depths[1].tried), (1.0, 2.0));
    assert_eq!(l.observe(&[], &[], &[1, 2], R0), 0);
}

#[test]
fn rows_on_a_streak_draft_and_rows_that_keep_missing_do_not() {
    let mut config = LengthConfig::new(4);
    config.explore = 0.0;
    let mut l = DraftLength::new(config).unwrap();
    // 40 ms a step and 10 ms a draft token, 1 token a step at 60 ms on average: tau = 1/6
    for i in 0..64 {
        let drafts = [i % 5];
        l.observe_step(&drafts, 0.04 + 0.01 * drafts[0] as f64, 1);
    }
    assert!((l.tau() - 1.0 / 6.0).abs() < 0.01, "{}", l.tau());
    // a first token is right 15 % of the time after a miss, 90 % after 7+ hits in a row
    let hot = RowState {
        streak: 8,
        matched: 0,
    };
    for i in 0..400u32 {
        let cold = if i % 20 < 3 { 5 } else { 6 };
        l.observe(&[5, 5, 5, 5], &[1.0; 4], &[cold], R0);
        l.observe(&[5, 5, 5, 5], &[1.0; 4], &[5, 5, 5, 5, 5], hot);
    }
    assert!(
        l.probability(0, 1.0, R0) < 0.2,
        "{}",
        l.probability(0, 1.0, R0)
    );
    assert!(
        l.probability(0, 1.0, hot) > 0.9,
        "{}",
        l.probability(0, 1.0, hot)
    );
    assert_eq!(l.cut_batch(&[&[1.0; 4], &[1.0; 4]], &[R0, hot]), [0, 4]);
}

#[test]
fn rows_that_match_their_text_draft_and_rows_that_do_not_stop() {
    // the same streak, told apart by the match alone (and not with match bins off)
    for (match_bins, expect) in [(MATCH_BINS, [0, 4]), (1, [4, 4])] {
        let mut config = LengthConfig::new(4);
        config.explore = 0.0;
        config.match_bins = match_bins;
        let mut l = DraftLength::new(config).unwrap();
        for i in 0..64 {
            let drafts = [i % 5];
            l.observe_step(&drafts, 0.04 + 0.01 * drafts[0] as f64, 1);
        }
        let (new, copying) = (
            RowState {
                streak: 3,
                matched: 0,
            },
            RowState {
                streak: 3,
                matched: 8,
            },
        );
        for i in 0..400u32 {
            let cold = if i % 10 == 0 { 5 } else { 6 };
            l.observe(&[5, 5, 5, 5], &[1.0; 4], &[cold], new);
            l.observe(&[5, 5, 5, 5], &[1.0; 4], &[5, 5, 5, 5, 5], copying);
        }
        assert_eq!(
            l.cut_batch(&[&[1.0; 4], &[1.0; 4]], &[new, copying]),
            expect
        );
    }
}

#[test]
fn a_cold_controller_drafts_whole_chains_then_as_far_as_they_are_likely() {
    let mut config = LengthConfig::new(4);
    config.explore = 0.0;
    let mut l = DraftLength::new(config).unwrap();
    let (new, copying) = (
        R0,
        RowState {
            streak: 0,
            matched: 8,
        },
    );
    // no step timed and no outcome yet: every chain whole
    assert_eq!(
        l.cut_batch(&[&[1.0; 4], &[1.0; 4]], &[new, copying]),
        [4, 4]
    );
    // still no cost (fewer than min_steps steps), but outcomes: a new row's first token is right
    // 20 % of the time (kept: 0.2 >= COLD_FLOOR; the second, 0.2 * 0.2, not); a copying row's
    // every token
    for i in 0..40u32 {
        let first = if i % 5 == 0 { 5 } else { 6 };
        l.observe(&[5, 5, 5, 5], &[1.0; 4], &[first], new);
        l.observe(&[5, 5, 5, 5], &[1.0; 4], &[5, 5, 5, 5, 5], copying);
    }
    assert!(!l.rate.is_finite());
    assert_eq!(
        l.cut_batch(&[&[1.0; 4], &[1.0; 4]], &[new, copying]),
        [1, 4]
    );
    // and nothing measured without matches either: the rule is the estimate's, not the match's
    let mut l = DraftLength::new(LengthConfig {
        explore: 0.0,
        ..LengthConfig::new(4)
    })
    .unwrap();
    for _ in 0..40 {
        l.observe(&[5, 5, 5, 5], &[0.1; 4], &[6], R0);
        l.observe(&[5, 5, 5, 5], &[0.9; 4], &[5, 5, 5, 5, 5], R0);
    }
    assert_eq!(l.cut_batch(&[&[0.1; 4], &[0.9; 4]], &[R0, R0]), [0, 4]);
}

#[test]
fn a_bad_setting_is_named() {
    let mut c = LengthConfig::new(3);
    c.explore = 2.0;
    let err = DraftLength::new(c).unwrap_err().to_string();
    assert!(err.contains("explore"), "{err}");
    assert!(DraftLength::new(LengthConfig::new(0)).is_err());
    let mut c = LengthConfig::new(3);
    c.streak_bins = STREAK_BINS + 1;
    let err = DraftLength::new(c).unwrap_err().to_string();
    assert!(err.contains("streak_bins"), "{err}");
    let mut c = LengthConfig::new(3);
    c.match_bins = 0;
    let err = DraftLength::new(c).unwrap_err().to_string();
    assert!(err.contains("match_bins"), "{err}");
}
