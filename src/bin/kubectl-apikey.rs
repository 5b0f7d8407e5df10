//! `kubectl-apikey`: the kubectl plugin (`kubectl apikey ...` once it is on the PATH).
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    keyward::plugin::main()
}
