//! A CUDA build links libcuda, cuBLAS and cuRAND dynamically. The machine that builds it
//! (scripts/build-cuda) has only PyPI's wheels and a link-time stub, so the binary carries
//! a run path to where a GPU machine keeps its CUDA libraries; `$ORIGIN` first, so
//! libraries copied beside the binary win.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        println!(
            "cargo:rustc-link-arg-bins=-Wl,-rpath,$ORIGIN:/usr/local/cuda/lib64:/usr/local/cuda/targets/x86_64-linux/lib"
        );
    }
}
