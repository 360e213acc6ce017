//! Prepares the default guest into the user's cache and prints where it is
//! and how to boot it under QEMU: `cargo run -p guest --example prepare [--force]`.

fn main() {
    let opts = guest::PrepareOptions {
        force: std::env::args().any(|a| a == "--force"),
        ..guest::PrepareOptions::default()
    };
    match guest::prepare(&opts, &mut |line| eprintln!("{line}")) {
        Ok(image) => {
            println!("bzImage   {}", image.kernel_bzimage.display());
            println!("vmlinux   {}", image.vmlinux.display());
            println!("initramfs {}", image.initramfs.display());
            println!("release   {}", image.kernel_release);
            println!("cmdline   {}", image.default_cmdline);
            println!(
                "try: qemu-system-x86_64 -M q35 -accel tcg -m 256 -nographic -no-reboot \
                 -kernel {} -initrd {} -append '{} {}'",
                image.kernel_bzimage.display(),
                image.initramfs.display(),
                image.default_cmdline,
                guest::command_cmdline(&["uname".to_string(), "-a".to_string()])
            );
        }
        Err(e) => {
            let mut msg = format!("error: {e}");
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            eprintln!("{msg}");
            std::process::exit(1);
        }
    }
}
