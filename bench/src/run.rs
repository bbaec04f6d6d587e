//! `satchel-bench run`: starts the pinned server, runs the pinned load generator once per
//! contender per round in a rotating order, and reports the median of the per-round ratios.

use std::io::{BufRead as _, BufReader, Lines};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};

use crate::contenders::{self, BASELINE, Contender};
use crate::load::{Measurement, RoundReport, Schedule, TargetArg};
use crate::report::{self, ContenderResult, Report, Sample};
use crate::server::Ready;

/// Arguments of `satchel-bench run`.
#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// How long and how hard to measure.
    #[command(flatten)]
    pub(crate) schedule: Schedule,
    /// Only these contenders, comma-separated (see `satchel-bench list`); `bare` is always
    /// measured, as the baseline.
    #[arg(long, value_delimiter = ',')]
    pub(crate) contenders: Vec<String>,
    /// Also write the results, every round's included, as JSON to this file.
    #[arg(long)]
    pub(crate) json: Option<PathBuf>,
    /// The CPU the server is pinned to.
    #[arg(long, default_value_t = 0)]
    pub(crate) server_cpu: usize,
    /// The CPU the load generator is pinned to.
    #[arg(long, default_value_t = 1)]
    pub(crate) load_cpu: usize,
}

/// The server process; closing its standard input stops it.
struct ServerProcess {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the benchmark and prints the report; fails after printing if any contender had
/// errors.
pub(crate) fn run(args: &RunArgs) -> anyhow::Result<()> {
    ensure!(
        args.server_cpu != args.load_cpu,
        "the server and the load generator need CPUs of their own"
    );
    let selected = select(&args.contenders)?;
    let exe = std::env::current_exe().context("cannot find this program's own path")?;
    let date = report::utc_now();
    let command = report::shell_line(std::env::args());

    let (server, ports) = start_server(&exe, args.server_cpu, &selected)?;
    let targets = selected
        .iter()
        .map(|contender| {
            let port = ports.get(contender.name).copied().with_context(|| {
                format!("the server did not report a port for {}", contender.name)
            })?;
            Ok(TargetArg {
                name: contender.name.to_owned(),
                port,
                path: contender.path.to_owned(),
                setup: contender.setup_path.map(str::to_owned),
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;

    let rounds = usize::from(args.schedule.rounds);
    let per_round = selected.len();
    let eta =
        (args.schedule.seconds + args.schedule.warmup).as_secs_f64() * (rounds * per_round) as f64;
    eprintln!("satchel-bench: {per_round} contenders × {rounds} rounds, about {eta:.0} s");
    // samples[i]: contender i, round by round.
    let mut samples: Vec<Vec<Sample>> = vec![Vec::with_capacity(rounds); per_round];
    for round in drive_load(&exe, args, &targets, server.child.id())? {
        let round = round?;
        ensure!(
            round.results.len() == per_round
                && round
                    .results
                    .iter()
                    .zip(&targets)
                    .all(|(measured, target)| measured.name == target.name),
            "the load generator reported other contenders than it was given"
        );
        let rps: Vec<f64> = round
            .results
            .iter()
            .map(|m| {
                if m.elapsed_secs > 0.0 {
                    m.completed as f64 / m.elapsed_secs
                } else {
                    0.0
                }
            })
            .collect();
        // The baseline is always selected first.
        let baseline = rps[0];
        ensure!(
            baseline > 0.0,
            "round {}: the baseline completed no requests ({})",
            round.round,
            round.results[0]
                .first_error
                .as_deref()
                .unwrap_or("no error recorded")
        );
        // Requests per second of server CPU time, relative to the baseline's.
        let per_cpu =
            |m: &Measurement, rps: f64| m.server_busy.filter(|b| *b > 0.0).map(|b| rps / b);
        let baseline_per_cpu = per_cpu(&round.results[0], baseline);
        let mut line = format!("round {}/{rounds}:", round.round);
        for ((measured, rps), samples) in round.results.into_iter().zip(rps).zip(&mut samples) {
            let cpu_ratio = per_cpu(&measured, rps)
                .zip(baseline_per_cpu)
                .map(|(own, base)| own / base);
            line.push_str(&format!(" {} {rps:.0}/s", measured.name));
            if measured.errors > 0 {
                line.push_str(&format!(" ({} ERRORS)", measured.errors));
            }
            samples.push(Sample {
                round: round.round,
                position: measured.position,
                completed: measured.completed,
                elapsed_secs: measured.elapsed_secs,
                rps,
                ratio: rps / baseline,
                cpu_ratio,
                errors: measured.errors,
                first_error: measured.first_error,
                server_busy: measured.server_busy,
                load_busy: measured.load_busy,
                steal: measured.steal,
            });
        }
        eprintln!("{line}");
    }
    drop(server);

    let report = Report {
        date,
        command,
        git: report::git_commit(),
        rounds,
        seconds: args.schedule.seconds.as_secs_f64(),
        warmup_secs: args.schedule.warmup.as_secs_f64(),
        slice_secs: args.schedule.slice.as_secs_f64(),
        connections: args.schedule.connections,
        nproc: std::thread::available_parallelism().map_or(0, usize::from),
        cpu_model: report::cpu_model(),
        server_cpu: args.server_cpu,
        load_cpu: args.load_cpu,
        contenders: selected
            .iter()
            .zip(samples)
            .map(|(c, samples)| ContenderResult::new(c.name, c.summary, c.target, samples))
            .collect(),
    };
    print!("{}", report.markdown());
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, json + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let flagged = report.flagged();
    if !flagged.is_empty() {
        let names: Vec<&str> = flagged.iter().map(|c| c.name.as_str()).collect();
        bail!(
            "{} had errors; their numbers are not valid",
            names.join(", ")
        );
    }
    Ok(())
}

/// The contenders named in `names` (all if empty), the baseline first.
fn select(names: &[String]) -> anyhow::Result<Vec<&'static Contender>> {
    if names.is_empty() {
        let mut all: Vec<&Contender> = contenders::all().collect();
        all.sort_by_key(|c| c.name != BASELINE);
        return Ok(all);
    }
    let mut selected = vec![contenders::find(BASELINE).context("the baseline is not registered")?];
    for name in names {
        let Some(contender) = contenders::find(name) else {
            let known: Vec<&str> = contenders::all().map(|c| c.name).collect();
            bail!("no contender named {name:?}; known: {}", known.join(", "));
        };
        // A goal relative to another contender needs that one measured too, before it.
        for (other, _) in contender.target.relative_goals() {
            let reference = contenders::find(other).with_context(|| {
                format!("{name} is compared with {other:?}, which is not registered")
            })?;
            if !selected.iter().any(|c| c.name == reference.name) {
                selected.push(reference);
            }
        }
        if !selected.iter().any(|c| c.name == contender.name) {
            selected.push(contender);
        }
    }
    Ok(selected)
}

/// `taskset -c cpu exe args…`.
fn pinned(cpu: usize, exe: &PathBuf) -> Command {
    let mut command = Command::new("taskset");
    command.arg("-c").arg(cpu.to_string()).arg(exe);
    command
}

/// Checks that a child reported the CPU list it was pinned to.
fn check_pinned(role: &str, reported: Option<&str>, cpu: usize) -> anyhow::Result<()> {
    let expected = cpu.to_string();
    match reported {
        Some(cpus) if cpus == expected => Ok(()),
        Some(cpus) => bail!("the {role} runs on CPUs {cpus}, not pinned to CPU {cpu}"),
        None => bail!("the {role} could not tell which CPUs it runs on (no /proc?)"),
    }
}

fn start_server(
    exe: &PathBuf,
    cpu: usize,
    selected: &[&Contender],
) -> anyhow::Result<(ServerProcess, std::collections::BTreeMap<String, u16>)> {
    let names: Vec<&str> = selected.iter().map(|c| c.name).collect();
    let mut child = pinned(cpu, exe)
        .arg("server")
        .arg("--contenders")
        .arg(names.join(","))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|error| match error.kind() {
            std::io::ErrorKind::NotFound => anyhow::anyhow!(
                "taskset not found: install util-linux (apt-get install util-linux)"
            ),
            _ => anyhow::Error::new(error).context("cannot start the server"),
        })?;
    let stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let server = ServerProcess { child, stdin };
    let stdout = stdout.context("the server's standard output was not captured")?;
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .context("cannot read the server's ports")?;
    ensure!(
        !line.is_empty(),
        "the server exited before listening (see its errors above)"
    );
    let ready: Ready = serde_json::from_str(&line)
        .with_context(|| format!("the server printed {line:?}, not its ports"))?;
    check_pinned("server", ready.cpus.as_deref(), cpu)?;
    Ok((server, ready.ports))
}

/// Starts the load generator on every target; yields its rounds as it reports them and fails
/// if it exits unsuccessfully.
fn drive_load(
    exe: &PathBuf,
    args: &RunArgs,
    targets: &[TargetArg],
    server_pid: u32,
) -> anyhow::Result<LoadProcess> {
    let mut command = pinned(args.load_cpu, exe);
    command.arg("load");
    for target in targets {
        command.arg("--target").arg(target.to_arg());
    }
    command
        .arg("--rounds")
        .arg(args.schedule.rounds.to_string())
        .arg("--seconds")
        .arg(args.schedule.seconds.as_secs_f64().to_string())
        .arg("--warmup")
        .arg(args.schedule.warmup.as_secs_f64().to_string())
        .arg("--slice")
        .arg(args.schedule.slice.as_secs_f64().to_string())
        .arg("--connections")
        .arg(args.schedule.connections.to_string())
        .arg("--server-pid")
        .arg(server_pid.to_string());
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot start the load generator")?;
    let stdout = child
        .stdout
        .take()
        .context("the load generator's standard output was not captured")?;
    Ok(LoadProcess {
        lines: BufReader::new(stdout).lines(),
        child: Some(child),
        load_cpu: args.load_cpu,
    })
}

/// The running load generator, read round by round; killed if dropped before it ends.
struct LoadProcess {
    lines: Lines<BufReader<ChildStdout>>,
    child: Option<Child>,
    load_cpu: usize,
}

impl Iterator for LoadProcess {
    type Item = anyhow::Result<RoundReport>;

    fn next(&mut self) -> Option<Self::Item> {
        let Some(line) = self.lines.next() else {
            let mut child = self.child.take()?;
            return match child.wait() {
                Ok(status) if status.success() => None,
                Ok(status) => Some(Err(anyhow::anyhow!(
                    "the load generator failed ({status}; see its errors above)"
                ))),
                Err(error) => Some(Err(
                    anyhow::Error::new(error).context("lost the load generator")
                )),
            };
        };
        Some(
            line.context("cannot read the load generator's output")
                .and_then(|line| {
                    serde_json::from_str::<RoundReport>(&line).with_context(|| {
                        format!("the load generator printed {line:?}, not a round")
                    })
                })
                .and_then(|round| {
                    check_pinned("load generator", round.cpus.as_deref(), self.load_cpu)?;
                    Ok(round)
                }),
        )
    }
}

impl Drop for LoadProcess {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}
