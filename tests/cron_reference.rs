//! Differential test of `src/cron.rs` against the library Kubernetes reads CronJob schedules
//! with: tools/cron is a Go program over robfig/cron v3.0.1 (the version Kubernetes pins) that
//! says, for each expression, whether the API server's CronJob validation accepts it and, if so,
//! the next fire times the CronJob controller computes in a time zone. This test builds it with
//! the machine's Go (from the Go module proxy, as the control plane is built), feeds it thousands
//! of generated expressions and start times in several zones (daylight-saving transitions
//! included), and compares every answer with the operator's.

mod support;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use jiff::Timestamp;
use jiff::tz::TimeZone;
use kra_operator::cron::Cron;
use support::season::Rng;

/// Zones with daylight saving in both hemispheres, a half-hour shift (Lord Howe), a shift at
/// midnight (Havana: the wall clock skips 00:00-01:00), odd offsets (Kolkata, Chatham), and none.
const ZONES: [&str; 9] = [
    "UTC",
    "Asia/Seoul",
    "America/New_York",
    "Europe/London",
    "Australia/Sydney",
    "Australia/Lord_Howe",
    "America/Havana",
    "Asia/Kolkata",
    "Pacific/Chatham",
];
const EXPRESSIONS: usize = 4_000;
const FIRE_TIMES: usize = 6;

/// One value of a field: mostly in range, sometimes a name in any case, sometimes just outside.
fn value(rng: &mut Rng, min: u64, max: u64, names: &[&str]) -> String {
    match rng.below(80) {
        0..=7 if !names.is_empty() => {
            let name = rng.pick(names);
            match rng.below(3) {
                0 => name.to_uppercase(),
                1 => name.to_string(),
                _ => name[..1].to_uppercase() + &name[1..],
            }
        }
        8 => (max + 1 + rng.below(3)).to_string(),
        9 if min > 0 => "0".into(),
        10 => rng.pick(&["x", "", "-1", "+2", "07"]).to_string(),
        _ => (min + rng.below(max - min + 1)).to_string(),
    }
}

/// `a-b`, mostly in order.
fn range(rng: &mut Rng, min: u64, max: u64, names: &[&str]) -> String {
    let (a, b) = (min + rng.below(max - min + 1), min + rng.below(max - min + 1));
    match rng.below(10) {
        0 => format!("{}-{}", value(rng, min, max, names), value(rng, min, max, names)),
        1 => format!("{}-{}", a.max(b), a.min(b)),
        _ => format!("{}-{}", a.min(b), a.max(b)),
    }
}

/// One comma-separated part: star, `?`, value, range, steps, and some malformed shapes.
fn part(rng: &mut Rng, min: u64, max: u64, names: &[&str]) -> String {
    let step = |rng: &mut Rng| rng.pick(&["1", "2", "3", "5", "7", "15", "2", "3", "0", "100"]).to_string();
    match rng.below(40) {
        0..=9 => "*".into(),
        10..=11 => "?".into(),
        12..=19 => value(rng, min, max, names),
        20..=25 => range(rng, min, max, names),
        26..=30 => format!("*/{}", step(rng)),
        31..=34 => format!("{}/{}", range(rng, min, max, names), step(rng)),
        35..=37 => format!("{}/{}", value(rng, min, max, names), step(rng)),
        38 => format!("?/{}", step(rng)),
        _ => rng.pick(&["*-5", "1-2-3", "1/2/3", "", "*/"]).to_string(),
    }
}

fn field(rng: &mut Rng, min: u64, max: u64, names: &[&str]) -> String {
    let parts = 1 + usize::from(rng.below(4) == 0) + usize::from(rng.below(8) == 0);
    (0..parts).map(|_| part(rng, min, max, names)).collect::<Vec<_>>().join(",")
}

fn expression(rng: &mut Rng) -> String {
    const MONTHS: [&str; 12] = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
    const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
    match rng.below(40) {
        0 => {
            let descriptors =
                ["@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly", "@daily "];
            rng.pick(&descriptors).to_string()
        }
        1 => format!("{}0 0 * * *", rng.pick(&["TZ=UTC ", "CRON_TZ=Asia/Seoul ", " ", "0 "])),
        _ => {
            // Schedules that fire often enough to cross a transition are the interesting ones, so
            // the hour and minute fields are as random as the rest.
            let fields = [
                field(rng, 0, 59, &[]),
                field(rng, 0, 23, &[]),
                field(rng, 1, 31, &[]),
                field(rng, 1, 12, &MONTHS),
                field(rng, 0, 6, &DAYS),
            ];
            fields.join(if rng.below(10) == 0 { "  " } else { " " })
        }
    }
}

/// A start time: anywhere in 2024-2029, or within a few hours of a zone's next transition.
fn start(rng: &mut Rng, tz: &TimeZone) -> i64 {
    let anywhere = 1_704_067_200 + rng.below(6 * 365 * 86_400) as i64;
    if rng.below(2) == 0 {
        return anywhere;
    }
    let near = Timestamp::from_second(anywhere).unwrap();
    match tz.following(near).next() {
        Some(transition) => transition.timestamp().as_second() - 6 * 3600 + rng.below(12 * 3600) as i64,
        None => anywhere,
    }
}

/// Builds tools/cron into the test's scratch folder with the machine's Go.
fn reference_binary() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let binary = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cron-reference");
    let status = Command::new("go")
        .args(["build", "-trimpath", "-o"])
        .arg(&binary)
        .arg(".")
        .current_dir(root.join("tools/cron"))
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "-mod=readonly")
        .status()
        .expect("Go is needed to build tools/cron (the Kubernetes cron library): install Go 1.26");
    assert!(status.success(), "go build of tools/cron failed");
    binary
}

fn ours(expression: &str, tz: &TimeZone, start: i64) -> String {
    match expression.parse::<Cron>() {
        Err(_) => "refused".into(),
        Ok(cron) => {
            let mut times = Vec::new();
            let mut at = Timestamp::from_second(start).unwrap();
            for _ in 0..FIRE_TIMES {
                match cron.next_after(at, tz) {
                    Some(next) => {
                        times.push(next.as_second().to_string());
                        at = next;
                    }
                    None => {
                        times.push("0".into());
                        break;
                    }
                }
            }
            format!("ok\t{}", times.join(","))
        }
    }
}

#[test]
fn schedules_read_and_fire_exactly_as_kubernetes_cronjob() {
    let mut rng = Rng(0x6b72_612d_6372_6f6e);
    let zones: Vec<TimeZone> = ZONES.iter().map(|name| TimeZone::get(name).unwrap()).collect();
    let mut cases = Vec::new();
    for i in 0..EXPRESSIONS {
        let expression = expression(&mut rng);
        // Every accepted expression in two zones, so that each zone sees about 900.
        for zone in [i % ZONES.len(), rng.below(ZONES.len() as u64) as usize] {
            let start = start(&mut rng, &zones[zone]);
            cases.push((zone, start, expression.clone()));
        }
    }
    let mut child = Command::new(reference_binary())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("cannot start tools/cron");
    let mut input = String::new();
    for (zone, start, expression) in &cases {
        input.push_str(&format!("{}\t{start}\t{FIRE_TIMES}\t{expression}\n", ZONES[*zone]));
    }
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(output.status.success(), "tools/cron failed");
    let answers: Vec<&str> = std::str::from_utf8(&output.stdout).unwrap().lines().collect();
    assert_eq!(answers.len(), cases.len(), "one answer per case");

    let (mut accepted, mut refused, mut mismatches) = (0, 0, Vec::new());
    for ((zone, start, expression), theirs) in cases.iter().zip(&answers) {
        let theirs = if theirs.starts_with("refused") { "refused" } else { theirs };
        let mine = ours(expression, &zones[*zone], *start);
        if theirs == "refused" {
            refused += 1;
        } else {
            accepted += 1;
        }
        if mine != theirs {
            mismatches.push(format!(
                "{:?} in {} from {start}: kubernetes {theirs:?}, ours {mine:?}",
                expression, ZONES[*zone]
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} cases differ, first:\n{}",
        mismatches.len(),
        cases.len(),
        mismatches[..mismatches.len().min(15)].join("\n")
    );
    // The generator must exercise both sides, or the comparison proves little.
    assert!(accepted > cases.len() / 4 && refused > cases.len() / 10, "{accepted} accepted, {refused} refused");
}
