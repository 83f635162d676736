//! Form as of a race's cutoff: per runner the horse's recent record, the days since its last
//! start, and its jockey's and trainer's recent rates, computed only from races run on days
//! strictly before the race's day whose results are stored (domain.md §2.4, the predecessor's
//! `past_stats` definitions). Missing history gives nulls and a flag, never a dropped runner
//! (domain.md §6 pitfall 5). Pure: stored history in, features and the hash of their inputs out.

use std::collections::{BTreeMap, HashMap};

use jiff::civil::Date;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The layout and definitions of the features; a change of either is a new version.
pub const ENRICHMENT_VERSION: &str = "kra-form-v1";
/// Days of history counted by the recent-form features (horse, jockey and trainer).
pub const FORM_WINDOW_DAYS: i64 = 90;
/// Days searched back for a horse's last start.
pub const LAST_START_WINDOW_DAYS: i64 = 365;

/// One runner's start in a past race.
#[derive(Clone, Debug, PartialEq)]
pub struct Start {
    pub hr_no: Option<String>,
    pub jk_no: Option<String>,
    pub tr_no: Option<String>,
    /// Finishing position; `None` for a runner that started and was not placed (fell, pulled up).
    pub position: Option<i64>,
    /// Among the placed horses of the result (the top three, four with a dead heat for third).
    pub placed: bool,
}

/// A past race with a stored result, as the history the features are computed from.
#[derive(Clone, Debug, PartialEq)]
pub struct PastRace {
    pub race_id: String,
    pub date: Date,
    /// The stored snapshot and result the starts were read from: the identity of this input.
    pub snapshot_sha256: String,
    pub result_sha256: String,
    pub starts: Vec<Start>,
}

/// A runner to compute features for.
#[derive(Clone, Debug, PartialEq)]
pub struct Runner {
    pub hr_no: Option<String>,
    pub jk_no: Option<String>,
    pub tr_no: Option<String>,
}

/// Recent record of a horse, jockey or trainer: starts, wins, top-three finishes and the rates
/// (`None` without starts).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub starts: i64,
    pub wins: i64,
    pub top3_finishes: i64,
    pub win_rate: Option<f64>,
    pub top3_rate: Option<f64>,
}

impl Record {
    fn add(&mut self, start: &Start) {
        self.starts += 1;
        self.wins += i64::from(start.position == Some(1));
        self.top3_finishes += i64::from(start.placed);
    }

    fn finish(mut self) -> Record {
        if self.starts > 0 {
            let n = self.starts as f64;
            self.win_rate = Some(round4(self.wins as f64 / n));
            self.top3_rate = Some(round4(self.top3_finishes as f64 / n));
        }
        self
    }
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

/// The features of one runner. The horse's record uses the predecessor's names.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunnerForm {
    pub recent_race_count: i64,
    pub recent_win_count: i64,
    pub recent_top3_count: i64,
    pub recent_win_rate: Option<f64>,
    pub recent_top3_rate: Option<f64>,
    pub days_since_last_start: Option<i64>,
    pub jockey: Record,
    pub trainer: Record,
    /// `no_recent_starts`, `no_start_in_365_days`, `jockey_no_recent_rides`,
    /// `trainer_no_recent_starts`, `hr_no_missing`, `jk_no_missing`, `tr_no_missing`.
    pub flags: Vec<String>,
}

/// The features of a race's runners (by horse number) and the hash of what they were computed from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RaceForm {
    pub version: String,
    pub window_days: i64,
    pub runners: BTreeMap<String, RunnerForm>,
    /// sha256 of the version, the race's own inputs and every past race of the history window
    /// (id, snapshot and result hashes): the same inputs always give the same hash.
    pub inputs_sha256: String,
}

/// Past races indexed by horse, jockey and trainer, for many lookups.
pub struct History {
    races: Vec<PastRace>,
    by_horse: HashMap<String, Vec<(usize, usize)>>,
    by_jockey: HashMap<String, Vec<(usize, usize)>>,
    by_trainer: HashMap<String, Vec<(usize, usize)>>,
}

impl History {
    pub fn new(mut races: Vec<PastRace>) -> History {
        races.sort_by(|a, b| (a.date, &a.race_id).cmp(&(b.date, &b.race_id)));
        let mut history =
            History { races, by_horse: HashMap::new(), by_jockey: HashMap::new(), by_trainer: HashMap::new() };
        for (r, race) in history.races.iter().enumerate() {
            for (s, start) in race.starts.iter().enumerate() {
                for (key, index) in [
                    (&start.hr_no, &mut history.by_horse),
                    (&start.jk_no, &mut history.by_jockey),
                    (&start.tr_no, &mut history.by_trainer),
                ] {
                    if let Some(key) = key {
                        index.entry(key.clone()).or_default().push((r, s));
                    }
                }
            }
        }
        history
    }

    /// Starts of `key` on days in `[first, before)`, newest last.
    fn starts<'a>(
        &'a self,
        index: &'a HashMap<String, Vec<(usize, usize)>>,
        key: Option<&str>,
        first: Date,
        before: Date,
    ) -> impl Iterator<Item = (&'a PastRace, &'a Start)> + 'a {
        key.and_then(|k| index.get(k))
            .into_iter()
            .flatten()
            .map(|&(r, s)| (&self.races[r], &self.races[r].starts[s]))
            .filter(move |(race, _)| race.date >= first && race.date < before)
    }

    fn record(
        &self,
        index: &HashMap<String, Vec<(usize, usize)>>,
        key: Option<&str>,
        first: Date,
        day: Date,
    ) -> Record {
        let mut record = Record::default();
        for (_, start) in self.starts(index, key, first, day) {
            record.add(start);
        }
        record.finish()
    }

    /// The hash of the race's own inputs and of every past race in the longest window before `day`.
    fn inputs_sha256(&self, day: Date, own: &str) -> String {
        let first = days_before(day, LAST_START_WINDOW_DAYS);
        let mut hasher = Sha256::new();
        hasher.update(format!("{ENRICHMENT_VERSION} {FORM_WINDOW_DAYS} {LAST_START_WINDOW_DAYS}\n{own}\n").as_bytes());
        for race in self.races.iter().filter(|r| r.date >= first && r.date < day) {
            hasher.update(format!("{} {} {}\n", race.race_id, race.snapshot_sha256, race.result_sha256).as_bytes());
        }
        hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The features of the runners of a race run on `day`; `own` identifies the race's own
    /// inputs (its snapshot hashes). Only races on days before `day` are read.
    pub fn race_form(&self, day: Date, own: &str, runners: &[Runner]) -> RaceForm {
        let first = days_before(day, FORM_WINDOW_DAYS);
        let mut out = BTreeMap::new();
        for runner in runners {
            let Some(hr_no) = runner.hr_no.clone() else { continue };
            let mut form = RunnerForm::default();
            let horse = self.record(&self.by_horse, Some(&hr_no), first, day);
            form.recent_race_count = horse.starts;
            form.recent_win_count = horse.wins;
            form.recent_top3_count = horse.top3_finishes;
            form.recent_win_rate = horse.win_rate;
            form.recent_top3_rate = horse.top3_rate;
            let last = self
                .starts(&self.by_horse, Some(&hr_no), days_before(day, LAST_START_WINDOW_DAYS), day)
                .map(|(race, _)| race.date)
                .max();
            form.days_since_last_start = last.map(|d| i64::from((day - d).get_days()));
            form.jockey = self.record(&self.by_jockey, runner.jk_no.as_deref(), first, day);
            form.trainer = self.record(&self.by_trainer, runner.tr_no.as_deref(), first, day);
            let flags = [
                (horse.starts == 0, "no_recent_starts"),
                (last.is_none(), "no_start_in_365_days"),
                (form.jockey.starts == 0, "jockey_no_recent_rides"),
                (form.trainer.starts == 0, "trainer_no_recent_starts"),
                (runner.jk_no.is_none(), "jk_no_missing"),
                (runner.tr_no.is_none(), "tr_no_missing"),
            ];
            form.flags = flags.iter().filter(|(on, _)| *on).map(|(_, name)| name.to_string()).collect();
            out.insert(hr_no, form);
        }
        RaceForm {
            version: ENRICHMENT_VERSION.into(),
            window_days: FORM_WINDOW_DAYS,
            runners: out,
            inputs_sha256: self.inputs_sha256(day, own),
        }
    }
}

fn days_before(day: Date, days: i64) -> Date {
    day.checked_sub(jiff::Span::new().days(days)).unwrap_or(Date::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(s: &str) -> Date {
        s.parse().unwrap()
    }

    fn start(hr: &str, jk: &str, position: Option<i64>) -> Start {
        Start {
            hr_no: Some(hr.into()),
            jk_no: Some(jk.into()),
            tr_no: Some("t1".into()),
            position,
            placed: position.is_some_and(|p| p <= 3),
        }
    }

    fn race(id: &str, day: &str, starts: Vec<Start>) -> PastRace {
        PastRace {
            race_id: id.into(),
            date: date(day),
            snapshot_sha256: format!("s-{id}"),
            result_sha256: format!("r-{id}"),
            starts,
        }
    }

    fn runner(hr: &str, jk: &str) -> Runner {
        Runner { hr_no: Some(hr.into()), jk_no: Some(jk.into()), tr_no: Some("t1".into()) }
    }

    #[test]
    fn recent_form_counts_the_window_before_the_race_day_only() {
        let history = History::new(vec![
            race("a", "2025-01-10", vec![start("h1", "j1", Some(1)), start("h2", "j2", Some(2))]),
            race("b", "2025-03-01", vec![start("h1", "j2", Some(3)), start("h2", "j1", Some(5))]),
            race("c", "2025-04-20", vec![start("h1", "j1", None), start("h2", "j2", Some(1))]),
            // The race day itself, and after it: never counted.
            race("d", "2025-05-01", vec![start("h1", "j1", Some(1))]),
            race("e", "2025-06-01", vec![start("h1", "j1", Some(1))]),
        ]);
        let form = history.race_form(date("2025-05-01"), "own", &[runner("h1", "j1"), runner("h9", "j9")]);
        let h1 = &form.runners["h1"];
        // 90 days before 2025-05-01 is 2025-01-31: races b and c.
        assert_eq!((h1.recent_race_count, h1.recent_win_count, h1.recent_top3_count), (2, 0, 1));
        assert_eq!((h1.recent_win_rate, h1.recent_top3_rate), (Some(0.0), Some(0.5)));
        assert_eq!(h1.days_since_last_start, Some(11));
        assert_eq!(
            (h1.jockey.starts, h1.jockey.wins, h1.jockey.top3_finishes),
            (2, 0, 0),
            "j1 rode h2 in b and h1 in c"
        );
        assert_eq!(h1.trainer.starts, 4);
        assert!(h1.flags.is_empty(), "{:?}", h1.flags);
        let h9 = &form.runners["h9"];
        assert_eq!((h9.recent_race_count, h9.recent_win_rate, h9.days_since_last_start), (0, None, None));
        assert_eq!(h9.flags, ["no_recent_starts", "no_start_in_365_days", "jockey_no_recent_rides"]);
    }

    #[test]
    fn a_runner_without_history_is_kept_with_nulls_and_flags() {
        let form = History::new(Vec::new()).race_form(date("2025-05-01"), "own", &[runner("h1", "j1")]);
        assert_eq!(form.runners.len(), 1, "never dropped");
        assert_eq!(form.runners["h1"].recent_top3_rate, None);
    }

    /// Property: adding or changing any race on or after a race's day never changes that race's
    /// features or their input hash (seeded generator, many cases).
    #[test]
    fn no_look_ahead_whatever_is_added_or_changed_on_or_after_the_race_day() {
        let mut seed = 0x5eed_u64;
        let mut next = move || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            seed >> 33
        };
        let base = date("2025-01-01");
        for _case in 0..200 {
            let mut races = Vec::new();
            for i in 0..40 {
                let day = base.checked_add(jiff::Span::new().days((next() % 200) as i64)).unwrap();
                let starts = (0..8)
                    .map(|p| {
                        let position = if next() % 10 == 0 { None } else { Some(p + 1) };
                        start(&format!("h{}", next() % 12), &format!("j{}", next() % 5), position)
                    })
                    .collect();
                races.push(race(&format!("r{i}"), &day.to_string(), starts));
            }
            let day = base.checked_add(jiff::Span::new().days((next() % 200) as i64)).unwrap();
            let runners: Vec<Runner> = (0..6).map(|h| runner(&format!("h{h}"), &format!("j{}", h % 5))).collect();
            let before = History::new(races.clone()).race_form(day, "own", &runners);
            // Change every race on or after the day, and add some.
            for race in races.iter_mut().filter(|r| r.date >= day) {
                race.result_sha256.push('x');
                for start in &mut race.starts {
                    start.position = Some(1);
                    start.placed = true;
                }
            }
            for i in 0..5 {
                let later = day.checked_add(jiff::Span::new().days((next() % 30) as i64)).unwrap();
                races.push(race(&format!("n{i}"), &later.to_string(), vec![start("h1", "j1", Some(1))]));
            }
            let after = History::new(races).race_form(day, "own", &runners);
            assert_eq!(before, after, "look-ahead on {day}");
        }
    }

    #[test]
    fn a_change_before_the_race_day_changes_the_input_hash() {
        let races = vec![race("a", "2025-01-10", vec![start("h1", "j1", Some(1))])];
        let before = History::new(races.clone()).race_form(date("2025-02-01"), "own", &[runner("h1", "j1")]);
        let mut changed = races;
        changed[0].result_sha256 = "other".into();
        let after = History::new(changed).race_form(date("2025-02-01"), "own", &[runner("h1", "j1")]);
        assert_ne!(before.inputs_sha256, after.inputs_sha256);
        assert_eq!(before.runners, after.runners, "same values, other inputs");
    }
}
