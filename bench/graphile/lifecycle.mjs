// graphile-worker's whole job lifecycle on no-op jobs: JOBS jobs of the task
// `noop` are added in one transaction, then RUNNERS worker processes (each a
// graphile-worker `run()` with CONCURRENCY) take, run and complete them. The
// clock runs from the moment the runner processes are started until
// graphile_worker._private_jobs is empty, so it includes the runners' start-up
// (Node, graphile-worker's own migration check, pool connect). Runners use
// graphile-worker's defaults (pollInterval 2 s, pool of 10 connections) and
// log warnings and errors only.
//
// Environment:
//   DATABASE_URL  a database this script may wipe (its graphile_worker schema is
//                 dropped and recreated)
//   JOBS          number of jobs                                  (3000)
//   RUNNERS       number of runner processes                      (2)
//   CONCURRENCY   graphile-worker `concurrency` in each runner    (4)
//   TIMEOUT_S     give up after this many seconds of draining     (1800)
//
// Jobs are added with graphile-worker's own bulk SQL function
// graphile_worker.add_jobs(job_spec[]) in a single statement (0.16's
// WorkerUtils has no addJobs; that came in 0.17). Each runner counts its noop
// executions and reports the count to this process when it is stopped; the run
// fails unless the counts add up to JOBS and the job table is empty.
//
// Output: one line on stdout,
//   graphile jobs=N runners=R concurrency=C wall_s=... jobs_per_s=...
// Everything else goes to stderr.

import { fork } from "node:child_process";
import { fileURLToPath } from "node:url";
import { Logger, makeWorkerUtils, run } from "graphile-worker";

const ROLE_ENV = "TRAINYARD_GRAPHILE_ROLE";
const POLL_MS = 50;
const CHECK_MS = 2_000;
const STOP_TIMEOUT_MS = 30_000;

// Only warnings and errors: graphile-worker logs every completed job at info
// level, which would put 90,000 console lines into the measurement.
const quietLogger = new Logger((scope) => (level, message) => {
  if (level === "error" || level === "warning") {
    const who = scope.workerId ? ` ${scope.workerId}` : "";
    console.error(`graphile[${process.pid}${who}] ${level}: ${message}`);
  }
});

function fail(message) {
  console.error(`lifecycle: error: ${message}`);
  process.exit(1);
}

function positiveInt(name, fallback) {
  const raw = process.env[name] ?? String(fallback);
  if (!/^[0-9]+$/.test(raw) || Number(raw) < 1) {
    fail(`${name} must be a positive integer, got '${raw}'`);
  }
  return Number(raw);
}

// ---------------------------------------------------------------- runner ----

async function runnerMain() {
  const connectionString = process.env.DATABASE_URL;
  const concurrency = positiveInt("CONCURRENCY", 4);
  let executed = 0;
  const runner = await run({
    connectionString,
    concurrency,
    noHandleSignals: true,
    logger: quietLogger,
    taskList: {
      noop: async () => {
        executed += 1;
      },
    },
  });
  let stopping = false;
  process.on("message", async (msg) => {
    if (msg !== "stop" || stopping) return;
    stopping = true;
    try {
      await runner.stop();
      process.send({ executed }, () => process.exit(0));
    } catch (err) {
      console.error(`runner ${process.pid}: stop failed: ${err?.stack ?? err}`);
      process.exit(1);
    }
  });
  // A runner whose parent is gone has nobody to report to.
  process.on("disconnect", () => {
    if (!stopping) process.exit(1);
  });
  runner.promise.catch((err) => {
    console.error(`runner ${process.pid}: worker failed: ${err?.stack ?? err}`);
    process.exit(1);
  });
}

// ------------------------------------------------------------ coordinator ---

function startRunner(env) {
  const child = fork(fileURLToPath(import.meta.url), [], {
    env: { ...env, [ROLE_ENV]: "runner" },
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
  const state = { child, report: null, exited: false };
  state.done = new Promise((resolve) => {
    child.on("message", (msg) => {
      if (msg && typeof msg.executed === "number") state.report = msg;
    });
    child.on("exit", (code, signal) => {
      state.exited = true;
      state.code = code;
      state.signal = signal;
      resolve();
    });
  });
  return state;
}

async function stopRunners(runners) {
  for (const r of runners) {
    if (!r.exited && r.child.connected) r.child.send("stop");
  }
  const timer = new Promise((resolve) => setTimeout(resolve, STOP_TIMEOUT_MS).unref());
  await Promise.race([Promise.all(runners.map((r) => r.done)), timer]);
  for (const r of runners) {
    if (!r.exited) r.child.kill("SIGKILL");
  }
}

async function coordinatorMain() {
  if (!process.env.DATABASE_URL) fail("DATABASE_URL is not set");
  const jobs = positiveInt("JOBS", 3000);
  const runnerCount = positiveInt("RUNNERS", 2);
  const concurrency = positiveInt("CONCURRENCY", 4);
  const timeoutS = positiveInt("TIMEOUT_S", 1800);

  const utils = await makeWorkerUtils({
    connectionString: process.env.DATABASE_URL,
    logger: quietLogger,
  });
  const runners = [];
  try {
    await utils.withPgClient((c) => c.query("drop schema if exists graphile_worker cascade"));
    await utils.migrate();

    const added = await utils.withPgClient(async (c) => {
      const { rows } = await c.query(
        `select count(*)::bigint as n
           from graphile_worker.add_jobs(array(
             select row('noop', '{}'::json, null, null, null, null, null, null)::graphile_worker.job_spec
               from generate_series(1, $1::int)))`,
        [jobs],
      );
      return Number(rows[0].n);
    });
    if (added !== jobs) throw new Error(`add_jobs inserted ${added} jobs, expected ${jobs}`);
    console.error(`lifecycle: ${jobs} jobs added; starting ${runnerCount} runners x concurrency ${concurrency}`);

    // The emptiness check is an index probe, cheap enough to repeat every
    // POLL_MS without taking CPU from the runners; the full scan for failed
    // jobs runs every CHECK_MS.
    const emptySql = "select id from graphile_worker._private_jobs order by id limit 1";
    const checkSql = `select count(*)::bigint as left,
                             count(*) filter (where attempts >= max_attempts)::bigint as dead,
                             count(*) filter (where last_error is not null)::bigint as failed,
                             max(last_error) as last_error
                        from graphile_worker._private_jobs`;
    const started = process.hrtime.bigint();
    for (let i = 0; i < runnerCount; i++) runners.push(startRunner(process.env));

    let wallS;
    await utils.withPgClient(async (c) => {
      let nextCheck = 0;
      for (;;) {
        const { rowCount } = await c.query(emptySql);
        const elapsed = Number(process.hrtime.bigint() - started) / 1e9;
        if (rowCount === 0) {
          wallS = elapsed;
          return;
        }
        if (elapsed * 1000 >= nextCheck) {
          nextCheck = elapsed * 1000 + CHECK_MS;
          const { rows } = await c.query(checkSql);
          const { left, dead, failed, last_error: lastError } = rows[0];
          if (Number(failed) > 0) {
            throw new Error(
              `${failed} job(s) failed (${dead} permanently); last error: ${lastError}`,
            );
          }
          if (elapsed > timeoutS) {
            throw new Error(`${left} of ${jobs} jobs still queued after ${timeoutS}s`);
          }
        }
        const gone = runners.find((r) => r.exited);
        if (gone) {
          throw new Error(
            `runner ${gone.child.pid} exited early (code ${gone.code}, signal ${gone.signal})`,
          );
        }
        await new Promise((resolve) => setTimeout(resolve, POLL_MS));
      }
    });

    await stopRunners(runners);
    const bad = runners.filter((r) => r.code !== 0 || !r.report);
    if (bad.length > 0) {
      throw new Error(
        `${bad.length} runner(s) did not stop cleanly: ` +
          bad.map((r) => `pid ${r.child.pid} code ${r.code} signal ${r.signal}`).join(", "),
      );
    }
    const executed = runners.reduce((sum, r) => sum + r.report.executed, 0);
    if (executed !== jobs) {
      throw new Error(`noop ran ${executed} times for ${jobs} jobs`);
    }
    console.error(
      `lifecycle: executions per runner: ${runners.map((r) => r.report.executed).join(" ")}`,
    );
    console.log(
      `graphile jobs=${jobs} runners=${runnerCount} concurrency=${concurrency} ` +
        `wall_s=${wallS.toFixed(3)} jobs_per_s=${(jobs / wallS).toFixed(1)}`,
    );
  } finally {
    await stopRunners(runners);
    await utils.release();
  }
}

const main = process.env[ROLE_ENV] === "runner" ? runnerMain : coordinatorMain;
main().catch((err) => fail(err?.message ?? String(err)));
