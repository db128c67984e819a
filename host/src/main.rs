//! The `polyhost` command line.

fn main() {
    println!("polyhost");
}
