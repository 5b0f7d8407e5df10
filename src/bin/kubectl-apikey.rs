//! `kubectl-apikey`: the kubectl plugin (`kubectl apikey ...` once it is on the PATH).

fn main() -> std::process::ExitCode {
    keyward::plugin::main()
}
