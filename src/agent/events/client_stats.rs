//! `Generic.Client.Stats`: the agent's own CPU use and resident memory, every
//! `period_s`, from /proc/self/stat (proc(5)).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::agent::events::stop::StopSignal;
use crate::artifacts::{ArtifactError, CLIENT_STATS};
use crate::limits::MIN_CLIENT_STATS_PERIOD;

pub(super) fn run(
    params: &BTreeMap<String, String>,
    emit: &dyn Fn(Value),
    stop: &StopSignal,
) -> Result<(), ArtifactError> {
    // The catalogue checked it is a u64; the floor keeps 0 from being a busy loop.
    let period_s = params
        .get("period_s")
        .and_then(|p| p.parse().ok())
        .unwrap_or(10);
    let period = Duration::from_secs(period_s).max(MIN_CLIENT_STATS_PERIOD);
    let mut sampler = Sampler::new().map_err(io_error)?;
    while !stop.wait(period) {
        match sampler.sample() {
            Ok(row) => emit(row),
            Err(e) => tracing::debug!("client stats sample skipped: {e}"),
        }
    }
    Ok(())
}

fn io_error(source: std::io::Error) -> ArtifactError {
    ArtifactError::Io {
        artifact: CLIENT_STATS.into(),
        what: "/proc/self/stat".into(),
        source,
    }
}

/// CPU % is the share of one core used since the previous sample.
pub(super) struct Sampler {
    ticks_per_second: u64,
    page_bytes: u64,
    last: (Instant, u64),
}

struct SelfStat {
    cpu_ticks: u64,
    threads: u64,
    rss_pages: u64,
}

impl Sampler {
    pub(super) fn new() -> std::io::Result<Self> {
        // SAFETY: sysconf reads a process-wide constant and has no memory side effects.
        let (ticks, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        let now = read_self_stat()?;
        Ok(Self {
            ticks_per_second: u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100),
            page_bytes: u64::try_from(page).ok().filter(|&p| p > 0).unwrap_or(4096),
            last: (Instant::now(), now.cpu_ticks),
        })
    }

    pub(super) fn sample(&mut self) -> std::io::Result<Value> {
        let stat = read_self_stat()?;
        let now = Instant::now();
        let elapsed_s = now.duration_since(self.last.0).as_secs_f64().max(1e-3);
        let used_s =
            stat.cpu_ticks.saturating_sub(self.last.1) as f64 / self.ticks_per_second as f64;
        self.last = (now, stat.cpu_ticks);
        let cpu_percent = (used_s / elapsed_s * 10_000.0).round() / 100.0;
        Ok(json!({
            "timestamp": crate::clock::since_epoch().as_secs(),
            "cpu_percent": cpu_percent,
            "rss_bytes": stat.rss_pages.saturating_mul(self.page_bytes),
            "threads": stat.threads,
        }))
    }
}

fn read_self_stat() -> std::io::Result<SelfStat> {
    let text = std::fs::read_to_string("/proc/self/stat")?;
    parse_self_stat(&text).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "unparsable /proc/self/stat",
        )
    })
}

/// Fields after the command name's last `)`: [11]=utime (field 14), [12]=stime (15),
/// [17]=num_threads (20), [21]=rss (24).
fn parse_self_stat(text: &str) -> Option<SelfStat> {
    let fields: Vec<&str> = text[text.rfind(')')? + 1..].split_whitespace().collect();
    let number = |i: usize| fields.get(i)?.parse::<u64>().ok();
    Some(SelfStat {
        cpu_ticks: number(11)? + number(12)?,
        threads: number(17)?,
        rss_pages: fields.get(21)?.parse::<i64>().ok()?.max(0) as u64,
    })
}

#[cfg(test)]
mod tests {
    //! Goal: a Stats row carries this process's real figures in the synthetic row's
    //! shape, and the query emits rows until stopped. Method: sample this test process.

    use super::*;
    use std::sync::Mutex;

    #[test]
    fn a_sample_is_this_process_and_shaped_like_the_synthetic_row() {
        let mut sampler = Sampler::new().unwrap();
        let spin = Instant::now();
        let mut x = 0u64;
        while spin.elapsed() < Duration::from_millis(50) {
            x = x.wrapping_mul(31).wrapping_add(1);
        }
        std::hint::black_box(x);
        let row = sampler.sample().unwrap();
        assert!(row["rss_bytes"].as_u64().unwrap() > 1024 * 1024);
        assert!(row["threads"].as_u64().unwrap() >= 1);
        let cpu = row["cpu_percent"].as_f64().unwrap();
        assert!((0.0..=100.0 * 64.0).contains(&cpu), "{cpu}");
        assert!(row["timestamp"].as_u64().unwrap() > 1_600_000_000);
        let synthetic = crate::agent::artifacts::synthetic::synthetic_rows(CLIENT_STATS, 1, 1);
        let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(&row), keys(&synthetic[0]));
    }

    #[test]
    fn the_query_emits_rows_until_stopped() {
        let rows = Mutex::new(Vec::new());
        let stop = StopSignal::new();
        std::thread::scope(|s| {
            s.spawn(|| {
                let params = BTreeMap::from([("period_s".to_string(), "0".to_string())]);
                run(&params, &|row| rows.lock().unwrap().push(row), &stop).unwrap();
            });
            while rows.lock().unwrap().len() < 2 {
                std::thread::sleep(Duration::from_millis(20));
            }
            stop.stop();
        });
        assert!(rows.lock().unwrap().len() >= 2);
    }

    #[test]
    fn stat_with_spaces_in_the_name_parses() {
        let line = "42 (a) b) S 1 42 42 0 -1 0 0 0 0 0 7 5 0 0 20 0 3 0 100 1000 250 0";
        let s = parse_self_stat(line).unwrap();
        assert_eq!((s.cpu_ticks, s.threads, s.rss_pages), (12, 3, 250));
        assert!(parse_self_stat("42 (x) S 1").is_none());
    }
}
