//! The README documents every option the CLI's help lists: both come from
//! people reading them, so they must not drift apart.

use assert_cmd::Command;

fn long_flags(help: &str) -> Vec<String> {
    let mut flags: Vec<String> = help
        .split(|c: char| c.is_whitespace() || matches!(c, ',' | '[' | '<' | '/' | '('))
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(|w| {
            w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
                .to_owned()
        })
        .filter(|f| f != "--help" && f != "--version")
        .collect();
    flags.sort();
    flags.dedup();
    flags
}

#[test]
fn every_summarize_batch_eval_and_serve_option_is_in_the_readme() {
    let readme = std::fs::read_to_string(abridge_tests::root().join("README.md")).unwrap();
    for command in ["summarize", "batch", "eval", "serve"] {
        let out = Command::cargo_bin("abridge")
            .unwrap()
            .args([command, "--help"])
            .assert()
            .success()
            .get_output()
            .stdout
            .clone();
        let help = String::from_utf8(out).unwrap();
        let flags = long_flags(&help);
        assert!(flags.len() > 5, "{command}: {flags:?} from\n{help}");
        let missing: Vec<&String> = flags
            .iter()
            .filter(|f| !readme.contains(f.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "`abridge {command}` options missing from the README: {missing:?}"
        );
    }
}
