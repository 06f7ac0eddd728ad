//! Build script: only the `hyperscan` feature needs it, to find the static `libhs.a` and the C++ runtime.
//!
//! Search order for libhs.a: `$HYPERSCAN_ROOT/lib`, `pkg-config --variable=libdir libhs`, /usr/lib/<triple>.
//! libstdc++ is linked statically when the compiler ships `libstdc++.a` (as vlaci/pyperscan does), so the
//! extension does not depend on the build machine's libstdc++ version; `WORKJET_DYNAMIC_STDCXX=1` opts out.

#![allow(clippy::print_stdout)] // a build script talks to cargo through stdout

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=HYPERSCAN_ROOT");
    println!("cargo:rerun-if-env-changed=WORKJET_DYNAMIC_STDCXX");
    if std::env::var_os("CARGO_FEATURE_HYPERSCAN").is_none() {
        return;
    }
    let libdir = std::env::var_os("HYPERSCAN_ROOT")
        .map(|root| PathBuf::from(root).join("lib"))
        .or_else(|| {
            let out = Command::new("pkg-config")
                .args(["--variable=libdir", "libhs"])
                .output()
                .ok()?;
            let dir = String::from_utf8(out.stdout).ok()?.trim().to_owned();
            (out.status.success() && !dir.is_empty()).then(|| PathBuf::from(dir))
        })
        .unwrap_or_else(|| PathBuf::from("/usr/lib/x86_64-linux-gnu"));
    println!("cargo:rustc-link-search=native={}", libdir.display());

    let static_cxx = std::env::var_os("WORKJET_DYNAMIC_STDCXX").is_none()
        && Command::new("c++")
            .arg("--print-file-name=libstdc++.a")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|p| PathBuf::from(p.trim()))
            .filter(|p| p.is_absolute() && p.exists())
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .map(|dir| println!("cargo:rustc-link-search=native={}", dir.display()))
            .is_some();
    if static_cxx {
        println!("cargo:rustc-link-lib=static=stdc++");
    } else {
        println!("cargo:rustc-link-lib=dylib=stdc++");
    }
    println!("cargo:rustc-link-lib=dylib=m");
    // Debian's libhs.a is PIE code: its PC-relative reference to `__libc_single_threaded` binds to the local
    // definition in rust/dlp/hyperscan.rs only when the extension binds its own symbols (see the comment there).
    println!("cargo:rustc-cdylib-link-arg=-Wl,-Bsymbolic");
}
