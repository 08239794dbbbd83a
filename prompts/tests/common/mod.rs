//! Shared by the prompts integration tests: fixture lookup (`corral-test-support`) and a
//! readable diff.

#![allow(dead_code)]

pub mod gen;
pub mod template_context;

pub use corral_test_support::fixture;

/// Reads a fixture as text.
pub fn fixture_text(name: &str) -> String {
    std::fs::read_to_string(fixture(name)).expect("fixture is readable UTF-8")
}

/// Panics with the first difference between two renders, shown with context.
pub fn assert_same(ours: &str, reference: &str, what: &str) {
    if ours == reference {
        return;
    }
    let at = ours
        .char_indices()
        .zip(reference.chars())
        .find(|((_, a), b)| a != b)
        .map(|((i, _), _)| i)
        .unwrap_or(ours.len().min(reference.len()));
    let from = floor(ours, at.saturating_sub(80));
    panic!(
        "{what}: renders differ at byte {at}\n  ours:      {:?}\n  reference: {:?}\n(full ours: {ours:?})\n(full reference: {reference:?})",
        &ours[from..floor(ours, (at + 80).min(ours.len()))],
        &reference[floor(reference, from.min(reference.len()))..floor(reference, (at + 80).min(reference.len()))],
    );
}

fn floor(text: &str, mut i: usize) -> usize {
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}
