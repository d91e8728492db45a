//! The fuzz crates (`media/fuzz`, `turn/fuzz`) are workspaces of their own that only
//! cargo-fuzz builds, and each of their targets is one line handing libFuzzer's input to
//! a function of its library, whose body the libraries' own tests run. This checks that
//! those lines stay true without building the fuzz crates (which share no compiled
//! dependency with this workspace): the table below names every target's function, so
//! a renamed or removed one fails to compile here, and every target file, its `[[bin]]`
//! entry and the table must agree.

use std::collections::BTreeSet;
use std::path::Path;

/// (fuzz crate directory, target name, the function's path as written, the function).
type Target = (&'static str, &'static str, &'static str, fn(&[u8]));

macro_rules! target {
    ($dir:literal, $name:ident, $($path:ident)::+) => {
        ($dir, stringify!($name), stringify!($($path)::+), $($path)::+ as fn(&[u8]))
    };
}

const TARGETS: &[Target] = &[
    target!(
        "media",
        opus_depacketizer,
        huddle_media::rtp::fuzz::opus_depacketizer
    ),
    target!(
        "media",
        h264_depacketizer,
        huddle_media::rtp::fuzz::h264_depacketizer
    ),
    target!("media", audio_level, huddle_media::rtp::fuzz::audio_level),
    target!(
        "media",
        frame_buffer,
        huddle_media::video::fuzz::frame_buffer
    ),
    target!("media", red, huddle_media::rtp::fuzz::red),
    target!("turn", wire, huddle_turn::fuzz::wire),
    target!("turn", server, huddle_turn::fuzz::server),
];

/// The `[[bin]]` entries of a fuzz crate's manifest: (name, path), and its dependency on
/// the library it fuzzes.
fn manifest(dir: &Path) -> (BTreeSet<(String, String)>, toml::Value) {
    let text = std::fs::read_to_string(dir.join("Cargo.toml")).expect("fuzz manifest");
    let manifest: toml::Value = toml::from_str(&text).expect("fuzz manifest parses");
    let bins = manifest["bin"]
        .as_array()
        .expect("[[bin]] entries")
        .iter()
        .map(|b| {
            let field = |k: &str| b[k].as_str().expect("bin name and path").to_owned();
            (field("name"), field("path"))
        })
        .collect();
    (bins, manifest["dependencies"].clone())
}

#[test]
fn every_fuzz_target_calls_the_library_function_it_names() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for dir in ["media", "turn"] {
        let fuzz = root.join(dir).join("fuzz");
        let (bins, deps) = manifest(&fuzz);
        let library = format!("huddle-{dir}");
        assert_eq!(
            deps[library.as_str()]["path"].as_str(),
            Some(".."),
            "{dir}/fuzz depends on {library} by path"
        );
        let expected: BTreeSet<(String, String)> = TARGETS
            .iter()
            .filter(|t| t.0 == dir)
            .map(|t| (t.1.to_owned(), format!("fuzz_targets/{}.rs", t.1)))
            .collect();
        assert_eq!(bins, expected, "{dir}/fuzz/Cargo.toml's [[bin]] entries");
        let files: BTreeSet<String> = std::fs::read_dir(fuzz.join("fuzz_targets"))
            .expect("fuzz_targets")
            .map(|e| format!("fuzz_targets/{}", e.unwrap().file_name().to_string_lossy()))
            .collect();
        let listed: BTreeSet<String> = expected.iter().map(|(_, p)| p.clone()).collect();
        assert_eq!(
            files, listed,
            "{dir}/fuzz/fuzz_targets holds the listed targets"
        );
        for (_, name, path, _) in TARGETS.iter().filter(|t| t.0 == dir) {
            let source = std::fs::read_to_string(fuzz.join(format!("fuzz_targets/{name}.rs")))
                .expect("target source");
            let code: String = source
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect::<String>()
                .split_whitespace()
                .collect();
            let path: String = path.split_whitespace().collect();
            assert_eq!(
                code,
                format!("#![no_main]libfuzzer_sys::fuzz_target!(|data:&[u8]|{path}(data));"),
                "{dir}/fuzz/fuzz_targets/{name}.rs"
            );
        }
    }
}

#[test]
fn the_target_functions_take_arbitrary_bytes() {
    // Their own suites run them over generated corpora; here only that each accepts
    // what libFuzzer starts with (nothing, and short junk) without panicking.
    for (_, name, _, run) in TARGETS {
        for input in [
            &[][..],
            &[0],
            &[0xff; 3],
            &[0x80, 0x60, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3],
        ] {
            let result = std::panic::catch_unwind(|| run(input));
            assert!(result.is_ok(), "{name} panicked on {input:?}");
        }
    }
}
