//! Turns `CDPMUX_LOOM_MUTANT=1` into `--cfg cdpmux_loom_mutant` for this crate alone, so
//! the loom models can run against the seeded bugs without rebuilding every dependency
//! (a change of RUSTFLAGS would).

fn main() {
    println!("cargo:rerun-if-env-changed=CDPMUX_LOOM_MUTANT");
    if std::env::var_os("CDPMUX_LOOM_MUTANT").is_some_and(|v| v == "1") {
        println!("cargo:rustc-cfg=cdpmux_loom_mutant");
    }
}
