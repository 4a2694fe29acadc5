//! The report: every figure as the median of the runs with its range, the ratios to the
//! ceilings, the DESIGN §9 bars and whether each held — as JSON (for tools and for comparing
//! runs) and as markdown (for people, and for BENCHMARKS.md).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::machine::Machine;
use super::stats::Summary;
use super::target::BackendKind;
use super::workload::Shape;
use super::workload::chain::LENGTH as CHAIN_LENGTH;

/// Subject name of the bare Valkey list queue.
pub const VALKEY_BARE: &str = "valkey-bare";
/// Subject name of the bare Postgres queue.
pub const POSTGRES_BARE: &str = "postgres-bare";
/// Subject name of the bare Valkey list queue popping one task per call.
pub const VALKEY_BARE_SINGLE: &str = "valkey-bare-1";
/// Subject name of the bare Postgres queue claiming one task per statement.
pub const POSTGRES_BARE_SINGLE: &str = "postgres-bare-1";
/// Subject name of the Valkey Lua floor: the least a function-based queue with leases does.
pub const VALKEY_LUA_FLOOR: &str = "valkey-lua";

/// What one metric key means.
#[derive(Clone, Copy, Debug)]
pub struct Metric {
    /// The key workloads report it under.
    pub key: &'static str,
    /// What it is, for people.
    pub label: &'static str,
    /// Unit shown after the number (`%` metrics are stored as fractions).
    pub unit: &'static str,
}

const fn m(key: &'static str, label: &'static str, unit: &'static str) -> Metric {
    Metric { key, label, unit }
}

/// The report's sections and the metrics in each, in display order.
pub const SECTIONS: &[(&str, &[Metric])] = &[
    (
        "Throughput",
        &[
            m(
                "flat.submit_per_s",
                "flat: submissions/s (16 producers)",
                "/s",
            ),
            m("ceiling.submit_per_s", "bare queue: submissions/s", "/s"),
            m("flat.exec_per_s", "flat: executions/s (16 workers)", "/s"),
            m(
                "ceiling.exec_per_s",
                "bare queue: tasks/s (16 workers)",
                "/s",
            ),
            m(
                "flat.vs_ceiling",
                "flat ÷ bare queue of the same server (pops of up to 8: the bar)",
                "%",
            ),
            m(
                "flat.vs_ceiling_single",
                "flat ÷ bare queue of the same server (one task per pop)",
                "%",
            ),
            m(
                "flat.vs_lua_floor",
                "flat ÷ the Lua floor (`valkey-lua`: leased, fenced tasks in functions)",
                "%",
            ),
            m(
                "ceiling.vs_list_queue",
                "Lua floor ÷ bare list queue (pops of up to 8)",
                "%",
            ),
            m("chain.flows_per_s", "chain: flows/s (10 nodes)", "/s"),
            m("chain.node_exec_per_s", "chain: node executions/s", "/s"),
            m(
                "chain.dag_efficiency",
                "DAG efficiency: chain node-exec/s ÷ flat exec/s",
                "%",
            ),
            m(
                "fanout.flows_per_s",
                "fan-out/fan-in: flows/s (1 → 100 → 1)",
                "/s",
            ),
            m(
                "fanout.node_exec_per_s",
                "fan-out/fan-in: node executions/s",
                "/s",
            ),
            m(
                "chain.create_flows_per_s",
                "chain: create_flow calls/s",
                "/s",
            ),
        ],
    ),
    (
        "Latency",
        &[
            m("flat.latency_p50_ms", "flat: claim → complete p50", "ms"),
            m("flat.latency_p99_ms", "flat: claim → complete p99", "ms"),
            m("ceiling.latency_p50_ms", "bare queue: pop → ack p50", "ms"),
            m("ceiling.latency_p99_ms", "bare queue: pop → ack p99", "ms"),
            m(
                "chain.hop_p50_ms",
                "chain: hop (upstream complete → downstream leased) p50",
                "ms",
            ),
            m("chain.hop_p99_ms", "chain: hop p99", "ms"),
            m(
                "fanout.spread_p50_ms",
                "fan-out: root complete → first leaf leased p50",
                "ms",
            ),
            m(
                "fanout.spread_p99_ms",
                "fan-out: root complete → first leaf leased p99",
                "ms",
            ),
            m(
                "fanout.join_p50_ms",
                "fan-in: last leaf complete → join leased p50",
                "ms",
            ),
            m(
                "fanout.join_p99_ms",
                "fan-in: last leaf complete → join leased p99",
                "ms",
            ),
            m(
                "probe.p50_ms",
                "cascade probe (idle): complete → downstream leased p50",
                "ms",
            ),
            m("probe.p99_ms", "cascade probe (idle): p99", "ms"),
        ],
    ),
    (
        "Cost per execution",
        &[
            m(
                "flat.calls_per_exec",
                "flat: backend calls per execution (drain)",
                "",
            ),
            m(
                "flat.round_trips_per_exec",
                "flat: Valkey round trips per execution (drain)",
                "",
            ),
            m("chain.calls_per_node", "chain: backend calls per node", ""),
            m(
                "chain.round_trips_per_node",
                "chain: Valkey round trips per node",
                "",
            ),
            m(
                "probe.claims_per_sample",
                "probe: claims until the downstream was leased",
                "",
            ),
            m(
                "flat.server_cpu_us",
                "flat: server CPU per execution (drain)",
                "µs",
            ),
            m(
                "ceiling.server_cpu_us",
                "bare queue: server CPU per task (drain)",
                "µs",
            ),
            m(
                "flat.client_cpu_us",
                "flat: bench-process CPU per execution (drain)",
                "µs",
            ),
            m(
                "ceiling.client_cpu_us",
                "bare queue: bench-process CPU per task (drain)",
                "µs",
            ),
            m(
                "flat.submit_server_cpu_us",
                "flat: server CPU per submission",
                "µs",
            ),
            m(
                "ceiling.submit_server_cpu_us",
                "bare queue: server CPU per submission",
                "µs",
            ),
            m("chain.server_cpu_us", "chain: server CPU per node", "µs"),
            m(
                "flat.wal_bytes",
                "flat: WAL bytes per execution (drain)",
                "B",
            ),
            m(
                "ceiling.wal_bytes",
                "bare queue: WAL bytes per task (drain)",
                "B",
            ),
            m(
                "ceiling.submit_wal_bytes",
                "bare queue: WAL bytes per submission",
                "B",
            ),
            m("chain.wal_bytes", "chain: WAL bytes per node", "B"),
        ],
    ),
    (
        "Footprint of a finished execution (100 B payload)",
        &[
            m(
                "footprint.bytes_per_exec",
                "server memory (Valkey) / on-disk bytes (Postgres) per execution",
                "B",
            ),
            m(
                "footprint.keys_bytes",
                "Valkey: MEMORY USAGE of the execution's own keys",
                "B",
            ),
            m(
                "footprint.rows_per_exec",
                "Postgres: rows per execution",
                "",
            ),
            m(
                "footprint.live_row_bytes",
                "Postgres: live ff_execution row size",
                "B",
            ),
        ],
    ),
    (
        "Idle engine (default configuration, no work)",
        &[
            m("idle.calls_per_s", "backend calls per second", "/s"),
            m(
                "idle.server_cpu_pct",
                "server CPU (percent of one core)",
                "%core",
            ),
        ],
    ),
];

/// A DESIGN §9 bar.
#[derive(Clone, Copy, Debug)]
pub struct Bar {
    /// The backend it applies to.
    pub backend: BackendKind,
    /// What it bounds.
    pub what: &'static str,
    /// The metric compared.
    pub metric: &'static str,
    /// `true`: the median must be at least `threshold`; `false`: below it.
    pub at_least: bool,
    /// The bound (fractions for `%` metrics).
    pub threshold: f64,
}

const fn bar(
    backend: BackendKind,
    what: &'static str,
    metric: &'static str,
    at_least: bool,
    threshold: f64,
) -> Bar {
    Bar {
        backend,
        what,
        metric,
        at_least,
        threshold,
    }
}

/// The bars of DESIGN §9 that the bench measures.
pub const BARS: &[Bar] = &[
    bar(
        BackendKind::Valkey,
        "flat throughput ≥ 80 % of the bare list queue",
        "flat.vs_ceiling",
        true,
        0.80,
    ),
    bar(
        BackendKind::Postgres,
        "flat throughput ≥ 70 % of the bare SKIP LOCKED queue",
        "flat.vs_ceiling",
        true,
        0.70,
    ),
    bar(
        BackendKind::Valkey,
        "DAG efficiency ≥ 80 % (chain node-exec/s ÷ flat exec/s)",
        "chain.dag_efficiency",
        true,
        0.80,
    ),
    bar(
        BackendKind::Postgres,
        "DAG efficiency ≥ 70 % (chain node-exec/s ÷ flat exec/s)",
        "chain.dag_efficiency",
        true,
        0.70,
    ),
    bar(
        BackendKind::Valkey,
        "cascade latency p50 < 1 ms",
        "probe.p50_ms",
        false,
        1.0,
    ),
    bar(
        BackendKind::Valkey,
        "cascade latency p99 < 5 ms",
        "probe.p99_ms",
        false,
        5.0,
    ),
    bar(
        BackendKind::Postgres,
        "cascade latency p50 < 5 ms",
        "probe.p50_ms",
        false,
        5.0,
    ),
    bar(
        BackendKind::Postgres,
        "cascade latency p99 < 25 ms",
        "probe.p99_ms",
        false,
        25.0,
    ),
    bar(
        BackendKind::Valkey,
        "memory per finished execution ≤ 1 KiB",
        "footprint.bytes_per_exec",
        false,
        1024.0 + f64::EPSILON,
    ),
];

/// A bar's outcome in one report.
#[derive(Clone, Debug, Serialize)]
pub struct BarOutcome {
    /// The backend.
    pub backend: &'static str,
    /// The bar, in words.
    pub bar: &'static str,
    /// The metric compared.
    pub metric: &'static str,
    /// The measured figure (median and range), if it was measured.
    pub measured: Option<Summary>,
    /// Whether the median met the bar; `None` when not measured.
    pub held: Option<bool>,
}

/// A size per backend: a durable Postgres is an order of magnitude slower than Valkey or
/// memory, and each measurement should last long enough (seconds) to mean something without
/// the slowest backend dominating the run time.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct PerBackend {
    /// For the in-memory backend.
    pub memory: u64,
    /// For Valkey (and its bare list queue).
    pub valkey: u64,
    /// For Postgres (and its bare queue).
    pub postgres: u64,
}

impl PerBackend {
    /// The size for `kind`.
    pub fn of(&self, kind: BackendKind) -> u64 {
        match kind {
            BackendKind::Memory => self.memory,
            BackendKind::Valkey => self.valkey,
            BackendKind::Postgres => self.postgres,
        }
    }
}

/// Sizes of the workloads.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Sizes {
    /// Flat: executions, and tasks of the bare queue of the same server.
    pub flat: PerBackend,
    /// Chain: flows of 10 nodes created and in flight at once, per round (the rounds: see
    /// [`Sizes::chain_rounds`]).
    pub chain_flows: u64,
    /// Fan-out/fan-in: flows of 1 → 100 → 1.
    pub fanout_flows: PerBackend,
    /// Cascade probe: samples.
    pub probe_samples: u64,
    /// Footprint: finished executions.
    pub footprint: u64,
    /// Idle engine: seconds settled before counting.
    pub idle_warmup_s: u64,
    /// Idle engine: seconds counted.
    pub idle_s: u64,
}

impl Sizes {
    /// Chain rounds (create the flows, drain them; only the drains are timed): as many as
    /// make the chains drain at least as many nodes as the flat workload runs executions. DAG
    /// efficiency divides one throughput by the other, so both are measured over the same
    /// amount of work: what a fresh deployment costs before it runs at its pace (on Postgres,
    /// the first calls of every pooled connection plan their statements) weighs the same on
    /// both sides. (On Postgres the first of ten rounds ran about 20 % slower than the others,
    /// and three rounds instead of ten put DAG efficiency 15 points lower.)
    pub fn chain_rounds(&self) -> PerBackend {
        let nodes_per_round = (self.chain_flows * CHAIN_LENGTH as u64).max(1);
        let rounds = |executions: u64| executions.div_ceil(nodes_per_round).max(1);
        PerBackend {
            memory: rounds(self.flat.memory),
            valkey: rounds(self.flat.valkey),
            postgres: rounds(self.flat.postgres),
        }
    }

    /// `--quick`: the whole run in under two minutes.
    pub const QUICK: Sizes = Sizes {
        flat: PerBackend {
            memory: 5_000,
            valkey: 5_000,
            postgres: 1_500,
        },
        chain_flows: 20,
        fanout_flows: PerBackend {
            memory: 4,
            valkey: 4,
            postgres: 2,
        },
        probe_samples: 50,
        footprint: 1_000,
        idle_warmup_s: 1,
        idle_s: 2,
    };
    /// The default: each run lasts about a minute on this machine. Chains run 100 flows in
    /// flight, as DESIGN §9 says.
    pub const DEFAULT: Sizes = Sizes {
        flat: PerBackend {
            memory: 50_000,
            valkey: 100_000,
            postgres: 10_000,
        },
        chain_flows: 100,
        fanout_flows: PerBackend {
            memory: 20,
            valkey: 20,
            postgres: 5,
        },
        probe_samples: 300,
        footprint: 10_000,
        idle_warmup_s: 2,
        idle_s: 10,
    };
}

/// How the report was made.
#[derive(Clone, Debug, Serialize)]
pub struct Settings {
    /// `--quick`.
    pub quick: bool,
    /// Runs per figure.
    pub runs: u32,
    /// Backends measured.
    pub backends: Vec<&'static str>,
    /// Workloads measured.
    pub workloads: Vec<&'static str>,
    /// Sizes.
    pub sizes: Sizes,
    /// Concurrency.
    pub shape: Shape,
}

/// A measurement that failed.
#[derive(Clone, Debug, Serialize)]
pub struct Failure {
    /// 1-based run number.
    pub run: u32,
    /// Backend or ceiling.
    pub subject: String,
    /// Workload.
    pub workload: &'static str,
    /// The error, with its causes.
    pub error: String,
}

/// Everything a bench run produced.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Seconds since the Unix epoch when the measurements started.
    pub started_at: u64,
    /// How long the measurements took, seconds.
    pub duration_s: f64,
    /// The machine.
    pub machine: Machine,
    /// How it was run.
    pub settings: Settings,
    /// Subject (backend or `*-bare` ceiling) → metric → median and range over the runs.
    pub figures: BTreeMap<String, BTreeMap<String, Summary>>,
    /// The DESIGN §9 bars.
    pub bars: Vec<BarOutcome>,
    /// Observations of the last run, by `subject workload`.
    pub notes: BTreeMap<String, Vec<String>>,
    /// Measurements that failed.
    pub failures: Vec<Failure>,
}

impl Report {
    /// A figure's summary.
    pub fn figure(&self, subject: &str, metric: &str) -> Option<&Summary> {
        self.figures.get(subject)?.get(metric)
    }

    /// Evaluates every bar whose backend was measured.
    pub fn evaluate_bars(&mut self, backends: &[BackendKind]) {
        self.bars = BARS
            .iter()
            .filter(|bar| backends.contains(&bar.backend))
            .map(|bar| {
                let measured = self.figure(bar.backend.name(), bar.metric).cloned();
                let held = measured.as_ref().map(|s| {
                    if bar.at_least {
                        s.median >= bar.threshold
                    } else {
                        s.median < bar.threshold
                    }
                });
                BarOutcome {
                    backend: bar.backend.name(),
                    bar: bar.what,
                    metric: bar.metric,
                    measured,
                    held,
                }
            })
            .collect();
    }

    /// For a missed throughput bar, what its costs say limits it: CPU per unit of work on the
    /// server and in the bench process, next to what it is compared with. On a machine whose
    /// cores the servers and the bench share, a drain's rate is bounded by the sum of the two,
    /// so the ratio of the sums predicts the ratio of the rates; the line gives both.
    fn limit_of(&self, bar: &BarOutcome) -> Option<String> {
        let median = |subject: &str, metric: &str| self.figure(subject, metric).map(|s| s.median);
        let backend = bar.backend;
        // (the compared subject and its metric prefix, the baseline's, what a unit is called)
        let (ours, base, base_name, unit) = match bar.metric {
            "flat.vs_ceiling" => {
                let ceiling = if backend == "valkey" {
                    VALKEY_BARE
                } else {
                    POSTGRES_BARE
                };
                (
                    (backend, "flat", "flat.calls_per_exec"),
                    (ceiling, "ceiling"),
                    format!("the bare queue (`{ceiling}`)"),
                    "execution",
                )
            }
            "chain.dag_efficiency" => (
                (backend, "chain", "chain.calls_per_node"),
                (backend, "flat"),
                "a flat execution".to_string(),
                "chain node",
            ),
            _ => return None,
        };
        let (subject, prefix, calls) = ours;
        let server = median(subject, &format!("{prefix}.server_cpu_us"))?;
        let client = median(subject, &format!("{prefix}.client_cpu_us"))?;
        let base_server = median(base.0, &format!("{}.server_cpu_us", base.1))?;
        let base_client = median(base.0, &format!("{}.client_cpu_us", base.1))?;
        let measured = bar.measured.as_ref()?.median;
        let calls = median(subject, calls).map_or_else(String::new, |c| {
            format!("{} backend calls per {unit}; ", number(c))
        });
        let mut line = format!(
            "{calls}CPU per {unit}: server {} µs, bench process {} µs, against {} µs and {} µs \
             for {base_name} — the server does {}× the work. Bounded by CPU, the ratio of the \
             sums predicts {} %; measured {} %.",
            number(server),
            number(client),
            number(base_server),
            number(base_client),
            number(server / base_server.max(f64::EPSILON)),
            number(100.0 * (base_server + base_client) / (server + client).max(f64::EPSILON)),
            number(100.0 * measured),
        );
        if bar.metric == "flat.vs_ceiling"
            && backend == "valkey"
            && let (Some(floor), Some(ours), Some(floor_server)) = (
                median(VALKEY_LUA_FLOOR, "ceiling.vs_list_queue"),
                median(backend, "flat.vs_lua_floor"),
                median(VALKEY_LUA_FLOOR, "ceiling.server_cpu_us"),
            )
        {
            let _ = write!(
                line,
                " The Lua floor (`{VALKEY_LUA_FLOOR}`: tasks leased and fenced in Valkey \
                 functions, nothing else) reaches {} % of the list queue at {} µs of server \
                 CPU per task; the engine reaches {} % of the floor.",
                number(100.0 * floor),
                number(floor_server),
                number(100.0 * ours),
            );
        }
        Some(line)
    }

    /// The subjects in display order: backends, then ceilings.
    fn subjects(&self) -> Vec<&str> {
        let order = [
            "memory",
            "valkey",
            VALKEY_BARE,
            VALKEY_BARE_SINGLE,
            VALKEY_LUA_FLOOR,
            "postgres",
            POSTGRES_BARE,
            POSTGRES_BARE_SINGLE,
        ];
        order
            .into_iter()
            .filter(|s| self.figures.contains_key(*s))
            .collect()
    }

    /// The markdown report.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let s = &self.settings;
        let _ = writeln!(out, "# FlowFabric benchmark report\n");
        let _ = writeln!(
            out,
            "`cargo xtask bench{}` — {} run{} of every measurement, {:.0} s in all. Every figure \
             is the **median of the runs**, with the range (min–max) in brackets. Ratios are \
             computed within each run (backend and ceiling measured back to back on the same \
             server), then summarized.\n",
            if s.quick { " --quick" } else { "" },
            s.runs,
            if s.runs == 1 { "" } else { "s" },
            self.duration_s
        );
        let m = &self.machine;
        let _ = writeln!(out, "## Machine\n");
        let _ = writeln!(out, "| | |\n|---|---|");
        let _ = writeln!(out, "| CPU | {} ({} logical cores) |", m.cpu, m.cores);
        let _ = writeln!(out, "| memory | {:.1} GiB |", m.memory_gib);
        let _ = writeln!(out, "| kernel | {} |", m.kernel);
        if let Some(v) = &m.valkey {
            let _ = writeln!(
                out,
                "| Valkey | {v} (standalone, AOF on, appendfsync everysec) |"
            );
        }
        if let Some(v) = &m.postgres {
            let _ = writeln!(
                out,
                "| PostgreSQL | {v} (fsync on, synchronous_commit on) |"
            );
        }
        let busy = |load: &str| {
            load.split_whitespace()
                .next()
                .and_then(|l| l.parse::<f64>().ok())
                .is_some_and(|l| l > m.cores as f64)
        };
        let contended = if busy(&m.load_at_start) || busy(&m.load_at_end) {
            " — **more runnable processes than cores: other work competed for the CPU, so \
             compare ratios, not absolute numbers**"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "| load average (1/5/15 min) | {} at start, {} at end{contended} |",
            m.load_at_start, m.load_at_end
        );
        let _ = writeln!(
            out,
            "| build | {} |\n| commit | {} |",
            m.build,
            m.commit.as_deref().unwrap_or("unknown")
        );
        let _ = writeln!(
            out,
            "\nSizes (memory / valkey / postgres): flat {} executions; chain {} flows × 10 \
             nodes in flight, {} rounds; fan-out {} flows × 102 nodes; probe {} samples; \
             footprint {} executions; idle engine {} s. Concurrency: {} producers, {} workers; a \
             worker claims up to {} when empty-handed, and the `complete` that empties its hands \
             leases up to {} more (`claim_next`; {} in the flow workloads).\n",
            triple(&s.sizes.flat),
            s.sizes.chain_flows,
            triple(&s.sizes.chain_rounds()),
            triple(&s.sizes.fanout_flows),
            s.sizes.probe_samples,
            s.sizes.footprint,
            s.sizes.idle_s,
            s.shape.producers,
            s.shape.workers,
            s.shape.claim_batch,
            s.shape.claim_next,
            s.shape.flow_claim_next
        );

        if !self.bars.is_empty() {
            let _ = writeln!(out, "## DESIGN §9 bars\n");
            let _ = writeln!(
                out,
                "| backend | bar | measured | held |\n|---|---|---|---|"
            );
            for b in &self.bars {
                let unit = unit_of(b.metric);
                let measured = b
                    .measured
                    .as_ref()
                    .map_or_else(|| "not measured".into(), |s| cell(s, unit));
                let held = match b.held {
                    Some(true) => "yes",
                    Some(false) => "**no**",
                    None => "—",
                };
                let _ = writeln!(out, "| {} | {} | {measured} | {held} |", b.backend, b.bar);
            }
            out.push('\n');
            let limits: Vec<String> = self
                .bars
                .iter()
                .filter(|b| b.held == Some(false))
                .filter_map(|b| {
                    Some(format!(
                        "- **{} {}**: {}",
                        b.backend,
                        b.bar,
                        self.limit_of(b)?
                    ))
                })
                .collect();
            if !limits.is_empty() {
                let _ = writeln!(
                    out,
                    "What limits the missed throughput bars, from the costs below:\n\n{}\n",
                    limits.join("\n")
                );
            }
        }

        let subjects = self.subjects();
        for (title, metrics) in SECTIONS {
            let rows: Vec<&Metric> = metrics
                .iter()
                .filter(|metric| {
                    subjects
                        .iter()
                        .any(|s| self.figure(s, metric.key).is_some())
                })
                .collect();
            if rows.is_empty() {
                continue;
            }
            let columns: Vec<&str> = subjects
                .iter()
                .copied()
                .filter(|s| {
                    rows.iter()
                        .any(|metric| self.figure(s, metric.key).is_some())
                })
                .collect();
            let _ = writeln!(out, "## {title}\n");
            let _ = writeln!(out, "| | {} |", columns.join(" | "));
            let _ = writeln!(out, "|---|{}", "---|".repeat(columns.len()));
            for metric in rows {
                let cells: Vec<String> = columns
                    .iter()
                    .map(|s| {
                        self.figure(s, metric.key)
                            .map_or_else(|| "".into(), |sum| cell(sum, metric.unit))
                    })
                    .collect();
                let _ = writeln!(out, "| {} | {} |", metric.label, cells.join(" | "));
            }
            out.push('\n');
        }

        if !self.notes.is_empty() {
            let _ = writeln!(out, "## Notes (last run)\n");
            for (what, notes) in &self.notes {
                for note in notes {
                    let _ = writeln!(out, "- **{what}**: {note}");
                }
            }
            out.push('\n');
        }
        if !self.failures.is_empty() {
            let _ = writeln!(out, "## Failed measurements\n");
            for f in &self.failures {
                let _ = writeln!(
                    out,
                    "- run {}, {} {}: {}",
                    f.run,
                    f.subject,
                    f.workload,
                    f.error.replace('\n', " ")
                );
            }
            out.push('\n');
        }
        out
    }
}

fn triple(p: &PerBackend) -> String {
    format!("{} / {} / {}", p.memory, p.valkey, p.postgres)
}

/// The unit of a metric key ("" if unknown).
pub fn unit_of(key: &str) -> &'static str {
    SECTIONS
        .iter()
        .flat_map(|(_, metrics)| metrics.iter())
        .find(|m| m.key == key)
        .map_or("", |m| m.unit)
}

/// `median unit (min–max)`; `%` metrics are fractions shown as percentages.
fn cell(s: &Summary, unit: &str) -> String {
    let (scale, shown) = match unit {
        "%" => (100.0, " %"),
        "/s" => (1.0, "/s"),
        "" => (1.0, ""),
        "%core" => (1.0, " %"),
        other => (1.0, other),
    };
    let sep = if shown.is_empty() || shown.starts_with(' ') || shown == "/s" {
        ""
    } else {
        " "
    };
    if s.values.len() <= 1 || s.min == s.max {
        format!("{}{sep}{shown}", number(s.median * scale))
    } else {
        format!(
            "{}{sep}{shown} ({}–{})",
            number(s.median * scale),
            number(s.min * scale),
            number(s.max * scale)
        )
    }
}

/// Three significant digits or so, never scientific notation.
pub fn number(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else if a == 0.0 {
        "0".into()
    } else {
        format!("{v:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(values: &[f64]) -> Summary {
        Summary::of(values).expect("invariant: values given")
    }

    #[test]
    fn cells_show_median_and_range() {
        assert_eq!(cell(&summary(&[0.5, 0.8, 0.7]), "%"), "70.0 % (50.0–80.0)");
        assert_eq!(cell(&summary(&[1234.4]), "/s"), "1234/s");
        assert_eq!(cell(&summary(&[0.25, 0.25]), "ms"), "0.250 ms");
        assert_eq!(number(0.0), "0");
        assert_eq!(number(12.345), "12.3");
    }

    #[test]
    fn every_bar_metric_is_documented() {
        for bar in BARS {
            assert_ne!(unit_of(bar.metric), "", "{}", bar.metric);
        }
    }

    #[test]
    fn the_valkey_flat_limit_names_the_lua_floor() {
        let mut report = empty_report("valkey");
        report.figures.insert(
            "valkey".into(),
            figures(&[
                ("flat.vs_ceiling", 0.3),
                ("flat.vs_lua_floor", 0.75),
                ("flat.server_cpu_us", 30.0),
                ("flat.client_cpu_us", 10.0),
            ]),
        );
        report.figures.insert(
            VALKEY_BARE.into(),
            figures(&[
                ("ceiling.server_cpu_us", 5.0),
                ("ceiling.client_cpu_us", 7.0),
            ]),
        );
        report.figures.insert(
            VALKEY_LUA_FLOOR.into(),
            figures(&[
                ("ceiling.vs_list_queue", 0.5),
                ("ceiling.server_cpu_us", 19.0),
            ]),
        );
        report.evaluate_bars(&[BackendKind::Valkey]);
        let md = report.markdown();
        assert!(
            md.contains(
                "reaches 50.0 % of the list queue at 19.0 µs of server CPU per task; the engine \
                 reaches 75.0 % of the floor"
            ),
            "{md}"
        );
    }

    /// Figures of one subject: each metric with a single run's value.
    fn figures(pairs: &[(&str, f64)]) -> BTreeMap<String, Summary> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), summary(&[*v])))
            .collect()
    }

    /// A report of `backend` with no figures yet.
    fn empty_report(backend: &'static str) -> Report {
        Report {
            started_at: 0,
            duration_s: 1.0,
            machine: Machine::default(),
            settings: Settings {
                quick: true,
                runs: 3,
                backends: vec![backend],
                workloads: vec![],
                sizes: Sizes::QUICK,
                shape: Shape::default(),
            },
            figures: BTreeMap::new(),
            bars: vec![],
            notes: BTreeMap::new(),
            failures: vec![],
        }
    }

    #[test]
    fn bars_compare_the_median() {
        let mut report = empty_report("valkey");
        report.figures.insert(
            "valkey".into(),
            [
                ("flat.vs_ceiling".to_string(), summary(&[0.9, 0.7, 0.85])),
                ("probe.p50_ms".to_string(), summary(&[1.5])),
            ]
            .into(),
        );
        report.evaluate_bars(&[BackendKind::Valkey]);
        let held: BTreeMap<&str, Option<bool>> =
            report.bars.iter().map(|b| (b.bar, b.held)).collect();
        assert_eq!(
            held["flat throughput ≥ 80 % of the bare list queue"],
            Some(true)
        );
        assert_eq!(held["cascade latency p50 < 1 ms"], Some(false));
        assert_eq!(held["cascade latency p99 < 5 ms"], None);
        assert!(report.bars.iter().all(|b| b.backend == "valkey"));
        let md = report.markdown();
        assert!(
            md.contains("| valkey | cascade latency p50 < 1 ms | 1.50 ms | **no** |"),
            "{md}"
        );
    }

    #[test]
    fn a_missed_throughput_bar_names_its_costs() {
        let mut report = empty_report("postgres");
        report.figures.insert(
            "postgres".into(),
            figures(&[
                ("flat.vs_ceiling", 0.5),
                ("flat.calls_per_exec", 1.0),
                ("flat.server_cpu_us", 150.0),
                ("flat.client_cpu_us", 50.0),
            ]),
        );
        report.figures.insert(
            POSTGRES_BARE.into(),
            figures(&[
                ("ceiling.server_cpu_us", 75.0),
                ("ceiling.client_cpu_us", 25.0),
            ]),
        );
        report.evaluate_bars(&[BackendKind::Postgres]);
        let md = report.markdown();
        assert!(
            md.contains("What limits the missed throughput bars"),
            "{md}"
        );
        assert!(
            md.contains("server 150 µs, bench process 50.0 µs, against 75.0 µs and 25.0 µs"),
            "{md}"
        );
        assert!(
            md.contains("the ratio of the sums predicts 50.0 %; measured 50.0 %"),
            "{md}"
        );
    }
}
