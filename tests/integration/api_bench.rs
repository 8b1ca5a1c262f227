//! `cycle-bench api` at a small scale: the seeding statements run on the
//! current schema, every API route answers 2xx on the seeded world (or 404
//! for a route not built yet), and the table names every route.

use std::process::Command;

use trainyard_tests::binary;

#[test]
fn the_api_benchmark_seeds_and_measures_every_route_at_a_small_scale() -> anyhow::Result<()> {
    let out = Command::new(binary("cycle-bench")?)
        .args(["api", "--jobs", "2000", "--orgs", "200", "--cycles", "12"])
        .args(["--requests", "3", "--warmup", "1"])
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "cycle-bench api failed:\n{stdout}\n{stderr}"
    );
    for route in [
        "/api/v1/overview",
        "/api/v1/jobs?q=reason:diverged",
        "/api/v1/orgs/{busy}",
    ] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("{route} ")))
            .unwrap_or_else(|| panic!("no line for {route} in:\n{stdout}"));
        // Measured (the timing verdict is the benchmark's business, not this test's).
        assert!(
            line.ends_with(" ok") || line.ends_with(" over 50 ms"),
            "{route} was not measured: {line}"
        );
    }
    assert!(
        !stdout.contains("skipped:"),
        "a route had no seeded id:\n{stdout}"
    );
    assert!(stdout.contains("rows: organizations=200 "), "{stdout}");
    Ok(())
}
