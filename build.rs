//! Turns `CDPMUX_LOOM_MUTANT=1` into `--cfg cdpmux_loom_mutant` for this crate alone (a
//! change of RUSTFLAGS would rebuild every dependency).
//!
//! That cfg switches no bug on by itself: it makes the seeded bugs of `src/mutant.rs`
//! switchable, one at a time, by a loom model calling `loom_api::seed(Mutant::X)`. With it
//! off (every normal build) each hook is a constant "do the right thing".

fn main() {
    println!("cargo:rerun-if-env-changed=CDPMUX_LOOM_MUTANT");
    if std::env::var_os("CDPMUX_LOOM_MUTANT").is_some_and(|v| v == "1") {
        println!("cargo:rustc-cfg=cdpmux_loom_mutant");
    }
}
