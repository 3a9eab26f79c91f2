//! `abridge synth` refuses what it cannot write, and leaves nothing behind.

#[test]
fn cli_rejects_other_models_and_quantizations() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.gguf");
    let out = out.to_str().unwrap();
    for args in [
        ["synth", "llama-2-7b", "--quant", "q4_K_M", "-o", out],
        [
            "synth",
            "mistral-7b-instruct-v0.2",
            "--quant",
            "q8_0",
            "-o",
            out,
        ],
    ] {
        assert_cmd::Command::cargo_bin("abridge")
            .unwrap()
            .args(args)
            .assert()
            .failure()
            .stderr(predicates::str::contains(
                "supported: mistral-7b-instruct-v0.2 q4_K_M",
            ));
    }
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
}
