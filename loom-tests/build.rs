//! Turns `CDPMUX_LOOM_MUTANT=1` into `--cfg cdpmux_loom_mutant` for the models, to match
//! the library built with switchable seeded bugs (see the root build.rs): under it the
//! models' `mod seeded` runs each model with its own bug on.

fn main() {
    println!("cargo:rerun-if-env-changed=CDPMUX_LOOM_MUTANT");
    if std::env::var_os("CDPMUX_LOOM_MUTANT").is_some_and(|v| v == "1") {
        println!("cargo:rustc-cfg=cdpmux_loom_mutant");
    }
}
