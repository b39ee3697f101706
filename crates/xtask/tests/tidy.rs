//! Checks on the shape of the workspace that code review would otherwise have to remember:
//! dependencies point one way (ARCHITECTURE.md), test support stays out of the product, and
//! every source file says why it exists.

use xtask::{crates, rust_files, workspace_root};

/// The layers of ARCHITECTURE.md: each crate and the workspace crates it may depend on.
const ALLOWED: &[(&str, &[&str])] = &[
    ("deft-core", &[]),
    ("deft-ecosystems", &[]),
    ("deft-store", &["deft-core"]),
    ("deft-forge", &["deft-core"]),
    ("deft-llm", &["deft-core"]),
    ("deft-egress", &["deft-core"]),
    ("deft-github", &["deft-core"]),
    ("deft-images", &["deft-core"]),
    ("deft-sandbox", &["deft-core", "deft-egress"]),
    ("deft-web", &["deft-core", "deft-egress"]),
    ("deft-notify", &["deft-core", "deft-store", "deft-egress"]),
    (
        "deft-container",
        &["deft-core", "deft-egress", "deft-sandbox"],
    ),
    (
        "deft-agent",
        &[
            "deft-core",
            "deft-store",
            "deft-forge",
            "deft-github",
            "deft-llm",
            "deft-egress",
            "deft-sandbox",
            "deft-images",
            "deft-ecosystems",
            "deft-web",
        ],
    ),
    ("deft-scheduler", &["deft-core", "deft-store", "deft-agent"]),
    (
        "deft-server",
        &[
            "deft-core",
            "deft-store",
            "deft-forge",
            "deft-github",
            "deft-notify",
        ],
    ),
    (
        "deft",
        &[
            "deft-core",
            "deft-store",
            "deft-forge",
            "deft-github",
            "deft-llm",
            "deft-egress",
            "deft-sandbox",
            "deft-agent",
            "deft-scheduler",
            "deft-server",
            "deft-images",
            "deft-container",
            "deft-web",
            "deft-notify",
        ],
    ),
    ("deft-testkit", &[]),
    ("xtask", &[]),
];

#[test]
fn dependencies_point_one_way() {
    let mut problems = Vec::new();
    for krate in crates() {
        let Some((_, allowed)) = ALLOWED.iter().find(|(name, _)| *name == krate.name) else {
            problems.push(format!(
                "{} is not in the layer table of tidy.rs and ARCHITECTURE.md",
                krate.name
            ));
            continue;
        };
        for dependency in krate.deft_dependencies("dependencies") {
            if !allowed.contains(&dependency.as_str()) {
                problems.push(format!(
                    "{} depends on {dependency}, against the layering",
                    krate.name
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn test_support_is_only_a_dev_dependency() {
    for krate in crates() {
        assert!(
            !krate
                .deft_dependencies("dependencies")
                .contains(&"deft-testkit".to_owned()),
            "{} depends on deft-testkit outside [dev-dependencies]",
            krate.name
        );
    }
}

#[test]
fn every_source_file_opens_with_why_it_exists() {
    let mut missing = Vec::new();
    for krate in crates() {
        for file in rust_files(&krate.dir) {
            let text = std::fs::read_to_string(&file).unwrap();
            if !text.trim_start().starts_with("//!") {
                missing.push(
                    file.strip_prefix(workspace_root())
                        .unwrap()
                        .display()
                        .to_string(),
                );
            }
        }
    }
    assert!(
        missing.is_empty(),
        "files without a `//!` header:\n{}",
        missing.join("\n")
    );
}

/// `unsafe` is denied in the workspace; the sandbox launcher's descriptor hygiene is the one
/// place allowed to lift that, and no other file may.
#[test]
fn only_one_place_may_lift_the_ban_on_unsafe() {
    let mut found = Vec::new();
    for krate in crates() {
        for file in rust_files(&krate.dir) {
            let text = std::fs::read_to_string(&file).unwrap();
            let relative = file
                .strip_prefix(workspace_root())
                .unwrap()
                .display()
                .to_string();
            // Any lint attribute naming it (allow, expect, a list); spelled in two halves, so
            // that this file does not count itself.
            let count = text.matches(concat!("unsafe", "_code")).count();
            if count > 0 {
                found.push((relative, count));
            }
        }
    }
    assert_eq!(
        found,
        [("crates/deft-sandbox/src/inner.rs".to_owned(), 1)],
        "only the launcher's descriptor hygiene may allow unsafe code"
    );
}

#[test]
fn every_crate_is_in_the_architecture_document() {
    let architecture = std::fs::read_to_string(workspace_root().join("ARCHITECTURE.md")).unwrap();
    for krate in crates() {
        assert!(
            architecture.contains(&format!("`{}`", krate.name)),
            "ARCHITECTURE.md does not describe {}",
            krate.name
        );
    }
}

/// A clone of the repository holds everything its tests read: a path written in the code that
/// climbs out of the checkout (three `..` up from a crate, into the folder beside it), or names
/// the folder that CI happens to lay beside it, works on one machine and fails on a newcomer's
/// clone.
/// The folder CI lays beside the checkout.
const SIBLING: &str = "shared";

#[test]
fn no_code_reads_a_path_outside_the_checkout() {
    let root = workspace_root();
    let mut problems = Vec::new();
    for krate in crates() {
        for file in rust_files(&krate.dir) {
            let relative = file.strip_prefix(&root).unwrap().display().to_string();
            if relative == "crates/xtask/tests/tidy.rs" {
                // This file names such paths to check that they are caught.
                continue;
            }
            let text = std::fs::read_to_string(&file).unwrap();
            for literal in xtask::string_literals(&text) {
                let beside =
                    ["seed", "fixtures", "tools", "SPEC"].map(|part| format!("{SIBLING}/{part}"));
                if beside.iter().any(|name| literal.contains(name.as_str())) {
                    problems.push(format!(
                        "{relative}: \"{literal}\" names the folder beside the checkout"
                    ));
                } else if literal.contains("../")
                    && !xtask::stays_inside(&krate.dir, &literal, &root)
                {
                    problems.push(format!(
                        "{relative}: \"{literal}\" climbs out of the checkout (from {})",
                        krate.dir.strip_prefix(&root).unwrap().display()
                    ));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "copy what a test reads into the repository (a fixtures/ folder of its crate):\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_outside_check_sees_a_climb_and_lets_a_sibling_crate_be() {
    let root = workspace_root();
    let testkit = root.join("crates/deft-testkit");
    assert!(!xtask::stays_inside(
        &testkit,
        &format!("../../../{SIBLING}/fixtures/github-webhooks"),
        &root
    ));
    assert!(xtask::stays_inside(
        &root.join("crates/deft-github"),
        "../deft-testkit/fixtures/github-webhooks",
        &root
    ));
    let source = r#"let a = Path::new("../../../x"); let c = '"'; // "../../.."
        let b = "fine";"#;
    assert_eq!(xtask::string_literals(source), ["../../../x", "fine"]);
}
