//! The README's first Rust example is `examples/flow_by_hand.rs`, which the build compiles:
//! this test fails when the two drift apart.

use std::path::Path;

/// The first fenced Rust block of the README.
fn readme_example(readme: &str) -> Option<String> {
    let start = readme.find("```rust")?;
    let body = start + readme[start..].find('\n')? + 1;
    let end = body + readme[body..].find("```")?;
    Some(readme[body..end].to_string())
}

/// The lines of the example between its markers, one indentation level (4 spaces) removed.
fn marked_region(example: &str) -> Option<String> {
    let start = example.find("// README:begin\n")? + "// README:begin\n".len();
    let end = example.find("    // README:end")?;
    Some(
        example[start..end]
            .lines()
            .map(|line| line.strip_prefix("    ").unwrap_or(line))
            .map(|line| format!("{line}\n"))
            .collect(),
    )
}

#[test]
fn the_readme_shows_the_compiled_example() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("../README.md")).expect("README.md is readable");
    let example = std::fs::read_to_string(root.join("examples/flow_by_hand.rs"))
        .expect("the example is readable");
    let shown = readme_example(&readme).expect("the README has a Rust example");
    let compiled = marked_region(&example).expect("the example has README markers");
    assert_eq!(
        shown, compiled,
        "README.md's first Rust block differs from examples/flow_by_hand.rs (between the markers)"
    );
}
