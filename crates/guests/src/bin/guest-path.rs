//! Prints the path of a built test guest, for running it by hand:
//! `vessel run --kernel "$(cargo run -q -p guests --bin guest-path -- hello)"`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(name) = std::env::args().nth(1) else {
        eprintln!("usage: guest-path NAME (one of: {})", names());
        return ExitCode::from(2);
    };
    match guests::by_name(&name) {
        Some(g) => {
            println!("{}", g.path);
            ExitCode::SUCCESS
        }
        None => {
            eprintln!(
                "guest-path: no test guest named '{name}' (one of: {})",
                names()
            );
            ExitCode::from(2)
        }
    }
}

fn names() -> String {
    guests::all()
        .iter()
        .map(|g| g.name)
        .collect::<Vec<_>>()
        .join(", ")
}
