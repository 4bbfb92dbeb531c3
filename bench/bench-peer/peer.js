// The peer in livesync-bench: Graphile Worker running a no-op task, driven over stdin/stdout.
//
//   node peer.js install <database-url>
//       Install (or upgrade) the graphile_worker schema, then exit.
//   node peer.js run <database-url> [--concurrency N] [--batched] [--record]
//       Print {"event":"loaded"}, wait for a "go" line on stdin, start the runner and print
//       {"event":"started"}; on a "stop" line (or end of stdin) shut down gracefully and
//       print {"event":"done", ...} with the number of tasks run, the wall-clock times (ms
//       since the Unix epoch, sub-millisecond) of the first and last task and of every
//       tenth of them, and with --record every task's appointment id and time.
//
// --batched turns on Graphile Worker's batching as its own performance test does: a local
// queue of 500 jobs (refetch delay 10 ms) and batched completion (completeJobBatchDelay 0).
// Without it the defaults apply: one fetch per job, one completion per job.
//
// Times come from performance.timeOrigin + performance.now(): the system's wall clock,
// read with microsecond precision, comparable with PostgreSQL's clock_timestamp() and
// with the benchmark driver's clock on the same host.
"use strict";

const readline = require("node:readline");
const { performance } = require("node:perf_hooks");
const { run, runMigrations, Logger } = require("graphile-worker");

const wallMs = () => performance.timeOrigin + performance.now();

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

// Warnings and errors to stderr; the per-job info lines would cost more than the no-op task.
const logger = new Logger(() => (level, message) => {
  if (level === "error" || level === "warning") {
    process.stderr.write(`graphile-worker ${level}: ${message}\n`);
  }
});

function arg(name, fallback) {
  const i = process.argv.indexOf(name);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

async function install(connectionString) {
  await runMigrations({ connectionString, logger });
  emit({ event: "installed" });
}

async function serve(connectionString) {
  const concurrency = Number(arg("--concurrency", "8"));
  const batched = process.argv.includes("--batched");
  const record = process.argv.includes("--record");

  const times = [];
  const recorded = [];
  const taskList = {
    noop: async (payload) => {
      const t = wallMs();
      times.push(t);
      if (record) recorded.push([payload.a, t]);
    },
  };
  const worker = {
    concurrentJobs: concurrency,
    maxPoolSize: concurrency + 2,
  };
  if (batched) {
    worker.localQueue = { size: 500, refetchDelay: { durationMs: 10 } };
    worker.completeJobBatchDelay = 0;
    worker.failJobBatchDelay = 0;
  }

  const lines = readline.createInterface({ input: process.stdin });
  const iter = lines[Symbol.asyncIterator]();
  emit({ event: "loaded", batched, concurrency });
  for (;;) {
    const { value, done } = await iter.next();
    if (done) return;
    if (value.trim() === "go") break;
  }

  const goAt = wallMs();
  const runner = await run({
    connectionString,
    concurrency,
    noHandleSignals: true,
    pollInterval: 2000,
    logger,
    taskList,
    preset: { worker },
  });
  emit({ event: "started", go_at_ms: goAt, started_at_ms: wallMs() });

  for (;;) {
    const { value, done } = await iter.next();
    if (done || value.trim() === "stop") break;
  }
  await runner.stop();
  times.sort((a, b) => a - b);
  const deciles =
    times.length === 0
      ? []
      : Array.from({ length: 11 }, (_, k) => times[Math.round((k * (times.length - 1)) / 10)]);
  emit({
    event: "done",
    tasks: times.length,
    first_task_ms: times.length ? times[0] : null,
    last_task_ms: times.length ? times[times.length - 1] : null,
    deciles_ms: deciles,
    recorded: record ? recorded : undefined,
  });
}

async function main() {
  const [mode, url] = process.argv.slice(2);
  if (!url) throw new Error("usage: node peer.js install|run <database-url> [options]");
  if (mode === "install") return install(url);
  if (mode === "run") return serve(url);
  throw new Error(`unknown mode ${mode}`);
}

main().then(
  () => process.exit(0),
  (e) => {
    process.stderr.write(`peer: ${e && e.stack ? e.stack : e}\n`);
    process.exit(1);
  },
);
