//! A synthetic but plausible KRA season, generated from a seed, for the fake API to serve: several
//! weeks around a given day, the three meets on their real race days (Seoul Sat/Sun, Busan
//! Fri/Sun, Jeju Fri/Sat), 8-14 runners a race from a stable of horses whose hidden ability
//! drives both their rating and their finishing order (so a rating baseline is better than
//! chance and far from perfect), weights, jockeys, scratches (API9_1 and `winOdds` 0), the
//! occasional dead heat, and odds.
//!
//! A race has run, and API214_1 serves its result fields, once its scheduled start (Asia/Seoul)
//! plus five minutes is past, or once the fake world is moved on: `GET /_fake/run?through=YYYYMMDD`
//! runs every race up to that day (so a demo can collect cards before their cutoff and then
//! results, in seconds). `GET /_fake/season` lists the race days.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Mutex;

use jiff::civil::{Date, Time, Weekday};
use jiff::tz::TimeZone;
use serde_json::{Value, json};

use super::fake_kra::Source;

pub use super::kra_day::{CANCELLED, CARD, HORSE, JOCKEY, JOCKEY_STATS, ODDS, OWNER, PLAN, TRACK, TRAINER, TRAINING};

/// The three racecourses as the API codes and names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Meet {
    Seoul = 1,
    Jeju = 2,
    Busan = 3,
}

impl Meet {
    pub const ALL: [Meet; 3] = [Meet::Seoul, Meet::Jeju, Meet::Busan];

    pub fn korean(self) -> &'static str {
        match self {
            Meet::Seoul => "서울",
            Meet::Jeju => "제주",
            Meet::Busan => "부경",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Meet::Seoul => "seoul",
            Meet::Jeju => "jeju",
            Meet::Busan => "busan",
        }
    }

    fn races_on(self, day: Weekday) -> bool {
        match self {
            Meet::Seoul => matches!(day, Weekday::Saturday | Weekday::Sunday),
            Meet::Busan => matches!(day, Weekday::Friday | Weekday::Sunday),
            Meet::Jeju => matches!(day, Weekday::Friday | Weekday::Saturday),
        }
    }

    fn races_a_day(self) -> (u64, u64) {
        match self {
            Meet::Seoul => (9, 11),
            Meet::Busan => (6, 9),
            Meet::Jeju => (6, 7),
        }
    }
}

/// splitmix64: small, seedable, the same on every machine (also the cron differential test's).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in lo..=hi.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    /// Uniform in 0..n.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// One of `items`.
    pub fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }

    /// Standard normal (Box-Muller).
    fn normal(&mut self) -> f64 {
        let u = self.unit().max(1e-12);
        let v = self.unit();
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

struct Horse {
    number: String,
    name: String,
    ability: f64,
    age: i64,
    sex: &'static str,
    trainer: usize,
    owner: usize,
}

#[derive(Clone, Debug)]
pub struct Runner {
    pub chul_no: i64,
    horse: usize,
    jockey: usize,
    pub rating: i64,
    pub burden: f64,
    body_weight: i64,
    weight_change: i64,
    pub scratched: bool,
    /// Finishing position (0 for a scratched horse).
    pub finish: i64,
    win_odds: f64,
}

#[derive(Clone, Debug)]
pub struct Race {
    pub number: i64,
    pub start: Time,
    pub distance: i64,
    class: &'static str,
    pub runners: Vec<Runner>,
}

pub struct Season {
    /// Race days by (date, meet), races in number order.
    days: BTreeMap<(Date, Meet), Vec<Race>>,
    horses: BTreeMap<Meet, Vec<Horse>>,
    ran_through: Mutex<Option<Date>>,
    seoul: TimeZone,
}

const JOCKEYS: usize = 24;
const TRAINERS: usize = 16;
const OWNERS: usize = 40;

fn horse_id(meet: Meet, index: usize) -> String {
    format!("00{}{:04}", meet as u8, index + 1)
}

fn jockey_id(meet: Meet, index: usize) -> String {
    format!("08{}{:03}", meet as u8, index + 1)
}

fn trainer_id(meet: Meet, index: usize) -> String {
    format!("07{}{:03}", meet as u8, index + 1)
}

fn owner_id(meet: Meet, index: usize) -> i64 {
    110_000 + meet as i64 * 1000 + index as i64 + 1
}

fn date_param(date: Date) -> String {
    date.strftime("%Y%m%d").to_string()
}

fn date_int(date: Date) -> i64 {
    date_param(date).parse().unwrap()
}

impl Season {
    /// The race days from `weeks_before` weeks before `today` to `weeks_after` weeks after it.
    pub fn generate(seed: u64, today: Date, weeks_before: i64, weeks_after: i64) -> Season {
        let mut rng = Rng(seed);
        let mut horses = BTreeMap::new();
        for meet in Meet::ALL {
            let stable: Vec<Horse> = (0..140)
                .map(|i| Horse {
                    number: horse_id(meet, i),
                    name: format!("{}{}호", meet.korean(), i + 1),
                    ability: rng.normal(),
                    age: rng.range(2, 7) as i64,
                    sex: ["수", "암", "거"][rng.range(0, 2) as usize],
                    trainer: rng.range(0, TRAINERS as u64 - 1) as usize,
                    owner: rng.range(0, OWNERS as u64 - 1) as usize,
                })
                .collect();
            horses.insert(meet, stable);
        }
        let jockey_skill: Vec<f64> = (0..JOCKEYS).map(|_| rng.normal() * 0.3).collect();
        let mut days = BTreeMap::new();
        let first = today.checked_sub(jiff::Span::new().weeks(weeks_before)).unwrap();
        let last = today.checked_add(jiff::Span::new().weeks(weeks_after)).unwrap();
        let mut date = first;
        while date <= last {
            for meet in Meet::ALL.into_iter().filter(|m| m.races_on(date.weekday())) {
                let (lo, hi) = meet.races_a_day();
                let count = rng.range(lo, hi) as i64;
                let races = (1..=count).map(|number| race(&mut rng, &horses[&meet], &jockey_skill, number)).collect();
                days.insert((date, meet), races);
            }
            date = date.tomorrow().unwrap();
        }
        Season { days, horses, ran_through: Mutex::new(None), seoul: TimeZone::get("Asia/Seoul").unwrap() }
    }

    /// The race days of `meet`, in order.
    pub fn race_days(&self, meet: Meet) -> Vec<Date> {
        self.days.keys().filter(|(_, m)| *m == meet).map(|(d, _)| *d).collect()
    }

    pub fn races(&self, date: Date, meet: Meet) -> &[Race] {
        self.days.get(&(date, meet)).map(Vec::as_slice).unwrap_or_default()
    }

    /// Run every race up to and including `date`.
    pub fn run_through(&self, date: Date) {
        let mut ran = self.ran_through.lock().unwrap();
        *ran = Some(ran.map_or(date, |d| d.max(date)));
    }

    fn has_run(&self, date: Date, race: &Race) -> bool {
        if self.ran_through.lock().unwrap().is_some_and(|through| date <= through) {
            return true;
        }
        let Ok(start) = date.to_datetime(race.start).to_zoned(self.seoul.clone()) else { return false };
        start.timestamp() + jiff::SignedDuration::from_mins(5) <= jiff::Timestamp::now()
    }

    fn card_rows(&self, date: Date, meet: Meet, race: &Race) -> Vec<Value> {
        let run = self.has_run(date, race);
        let stable = &self.horses[&meet];
        race.runners
            .iter()
            .map(|runner| {
                let horse = &stable[runner.horse];
                let finish = if run { runner.finish } else { 0 };
                let after = finish > 0;
                let time = if after { 60.0 + race.distance as f64 / 17.0 + finish as f64 * 0.4 } else { 0.0 };
                let entry = json!({
                    "rcDate": date_int(date), "rcDay": date.weekday().to_monday_one_offset(), "rcNo": race.number,
                    "rcName": "일반", "rcDist": race.distance, "meet": meet.korean(),
                    "track": "건조 (4%)", "weather": "맑음", "budam": "핸디캡", "ageCond": "연령오픈",
                    "prizeCond": "R0~40", "rank": race.class, "chaksun1": 22_000_000, "chaksun2": 9_000_000,
                    "chulNo": runner.chul_no, "hrNo": horse.number, "hrName": horse.name, "age": horse.age,
                    "sex": horse.sex, "name": "한국", "rating": runner.rating, "wgBudam": runner.burden,
                    "wgBudamBigo": "-", "wgHr": format!("{}({:+})", runner.body_weight, runner.weight_change),
                    "wgJk": runner.burden.round() as i64, "ilsu": 14 + runner.horse as i64 % 30, "hrTool": "-",
                    "jkNo": jockey_id(meet, runner.jockey), "jkName": format!("기수{}", runner.jockey + 1),
                    "trNo": trainer_id(meet, horse.trainer), "trName": format!("조교사{}", horse.trainer + 1),
                    "owNo": owner_id(meet, horse.owner), "owName": format!("마주{}", horse.owner + 1),
                });
                let result = json!({
                    "winOdds": if runner.scratched { 0.0 } else { runner.win_odds },
                    "plcOdds": if runner.scratched { 0.0 } else { (runner.win_odds / 3.0).max(1.0) },
                    "ord": finish, "ordBigo": if runner.scratched && run { "취소" } else { "-" },
                    "rcTime": time, "diffUnit": "-", "rankRise": 0,
                    "seG1fAccTime": if after { 13.2 } else { 0.0 }, "sjG1fOrd": finish,
                    "se_4cAccTime": if after { time * 0.7 } else { 0.0 }, "sj_4cOrd": finish,
                    "buS1fTime": 0, "jeG1fTime": 0
                });
                let mut row = entry.as_object().unwrap().clone();
                row.extend(result.as_object().unwrap().clone());
                Value::Object(row)
            })
            .collect()
    }

    fn odds_rows(&self, date: Date, race: &Race) -> Vec<Value> {
        if !self.has_run(date, race) {
            return Vec::new();
        }
        let active: Vec<&Runner> = race.runners.iter().filter(|r| !r.scratched).collect();
        let mut rows: Vec<Value> = active
            .iter()
            .flat_map(|r| {
                [
                    json!({"pool": "단승식", "chulNo": r.chul_no, "odds": r.win_odds, "rcNo": race.number, "rcDate": date_int(date)}),
                    json!({"pool": "연승식", "chulNo": r.chul_no, "odds": (r.win_odds / 3.0).max(1.0), "rcNo": race.number, "rcDate": date_int(date)}),
                ]
            })
            .collect();
        let mut placed: Vec<&Runner> = active.iter().copied().filter(|r| (1..=3).contains(&r.finish)).collect();
        placed.sort_by_key(|r| (r.finish, r.chul_no));
        if placed.len() >= 3 {
            let odds: f64 = placed.iter().take(3).map(|r| r.win_odds).product::<f64>() / 4.0;
            rows.push(json!({"pool": "삼복승식", "chulNo": placed[0].chul_no, "chulNo2": placed[1].chul_no,
                             "chulNo3": placed[2].chul_no, "odds": (odds * 10.0).round() / 10.0, "rcNo": race.number}));
        }
        rows
    }

    fn meet_of(query: &[(String, String)]) -> Option<Meet> {
        match param(query, "meet")? {
            "1" => Some(Meet::Seoul),
            "2" => Some(Meet::Jeju),
            "3" => Some(Meet::Busan),
            _ => None,
        }
    }
}

fn param<'a>(query: &'a [(String, String)], name: &str) -> Option<&'a str> {
    query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn parse_date(text: &str) -> Option<Date> {
    Date::strptime("%Y%m%d", text).ok()
}

fn race(rng: &mut Rng, stable: &[Horse], jockey_skill: &[f64], number: i64) -> Race {
    let field = rng.range(8, 14) as usize;
    let mut chosen: Vec<usize> = Vec::new();
    while chosen.len() < field {
        let horse = rng.range(0, stable.len() as u64 - 1) as usize;
        if !chosen.contains(&horse) {
            chosen.push(horse);
        }
    }
    let mut jockeys: Vec<usize> = Vec::new();
    while jockeys.len() < field {
        let jockey = rng.range(0, JOCKEYS as u64 - 1) as usize;
        if !jockeys.contains(&jockey) {
            jockeys.push(jockey);
        }
    }
    let mut runners: Vec<Runner> = chosen
        .iter()
        .zip(&jockeys)
        .enumerate()
        .map(|(i, (&horse, &jockey))| {
            let ability = stable[horse].ability;
            // The rating is what the handicapper sees of the ability: informative, not exact.
            let rating = (50.0 + 14.0 * ability + 5.0 * rng.normal()).round().clamp(10.0, 110.0) as i64;
            let burden = ((52.0 + (rating as f64 - 50.0) * 0.1 + rng.normal()) * 2.0).round().clamp(98.0, 124.0) / 2.0;
            Runner {
                chul_no: i as i64 + 1,
                horse,
                jockey,
                rating,
                burden,
                body_weight: 440 + rng.range(0, 80) as i64,
                weight_change: rng.range(0, 12) as i64 - 6,
                scratched: rng.unit() < 0.03,
                finish: 0,
                win_odds: 0.0,
            }
        })
        .collect();
    // Performance on the day: ability, the jockey, the weight carried, and luck.
    let mut performance: Vec<(f64, usize)> = runners
        .iter()
        .enumerate()
        .filter(|(_, r)| !r.scratched)
        .map(|(i, r)| {
            let ability = stable[r.horse].ability;
            (ability + jockey_skill[r.jockey] - 0.05 * (r.burden - 55.0) + 0.8 * rng.normal(), i)
        })
        .collect();
    performance.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut position = 1;
    for (place, (_, index)) in performance.iter().enumerate() {
        runners[*index].finish = position;
        // Now and then two horses cannot be separated: the next one shares the position.
        let dead_heat = place + 1 < performance.len() && place < 4 && rng.unit() < 0.01;
        if !dead_heat {
            position = place as i64 + 2;
        }
    }
    // Odds from the public's view of the ability (its rating, and some noise).
    let strengths: Vec<f64> = runners
        .iter()
        .map(|r| if r.scratched { 0.0 } else { (r.rating as f64 / 12.0 + 0.3 * rng.normal()).exp() })
        .collect();
    let total: f64 = strengths.iter().sum();
    for (runner, strength) in runners.iter_mut().zip(&strengths) {
        if !runner.scratched {
            runner.win_odds = ((0.8 * total / strength) * 10.0).round().max(11.0) / 10.0;
        }
    }
    let start = Time::new(10, 30, 0, 0).unwrap() + jiff::SignedDuration::from_mins(35 * (number - 1));
    Race {
        number,
        start,
        distance: [1000, 1200, 1300, 1400, 1600, 1800, 2000][rng.range(0, 6) as usize],
        class: ["국6등급", "국5등급", "국4등급", "국3등급"][rng.range(0, 3) as usize],
        runners,
    }
}

impl Source for Season {
    fn rows(&self, path: &str, query: &[(String, String)]) -> Option<Vec<Value>> {
        let meet = Season::meet_of(query);
        let date = param(query, "rc_date").or_else(|| param(query, "rc_date_fr")).and_then(parse_date);
        let number: Option<i64> = param(query, "rc_no").and_then(|n| n.parse().ok());
        let day = |date: Date, meet: Meet| self.races(date, meet);
        let rows = match path {
            PLAN => {
                let (date, meet) = (date?, meet?);
                day(date, meet)
                    .iter()
                    .map(|r| {
                        json!({"rcDate": date_int(date), "meet": meet.korean(), "rcNo": r.number,
                               "schStTime": r.start.hour() as i64 * 100 + r.start.minute() as i64, "rcDist": r.distance})
                    })
                    .collect()
            }
            CARD => {
                let (date, meet) = (date?, meet?);
                let race = day(date, meet).iter().find(|r| Some(r.number) == number)?;
                self.card_rows(date, meet, race)
            }
            ODDS => {
                let (date, meet) = (date?, meet?);
                let race = day(date, meet).iter().find(|r| Some(r.number) == number)?;
                self.odds_rows(date, race)
            }
            CANCELLED => {
                let (date, meet) = (date?, meet?);
                let stable = &self.horses[&meet];
                day(date, meet)
                    .iter()
                    .flat_map(|race| {
                        race.runners.iter().filter(|r| r.scratched).map(move |r| {
                            json!({"rcDate": date_int(date), "rcNo": race.number, "chulNo": r.chul_no,
                                   "meet": meet.korean(), "hrName": stable[r.horse].name, "cancelReason": "마체이상"})
                        })
                    })
                    .collect()
            }
            TRACK => {
                let (date, meet) = (date?, meet?);
                day(date, meet)
                    .iter()
                    .map(|r| json!({"rcNo": r.number, "weather": "맑음", "track": "건조", "waterPercent": 4, "rcDate": date_int(date)}))
                    .collect()
            }
            TRAINING => Vec::new(),
            HORSE => {
                let id = param(query, "hr_no")?;
                let (meet, horse) = self
                    .horses
                    .iter()
                    .find_map(|(m, stable)| stable.iter().find(|h| h.number == id).map(|h| (*m, h)))?;
                vec![json!({"hrNo": horse.number, "hrName": horse.name, "meet": meet.korean(), "age": horse.age,
                            "sex": horse.sex, "rcCntT": 12, "ord1CntT": 2})]
            }
            JOCKEY | JOCKEY_STATS => {
                let id = param(query, "jk_no")?;
                vec![json!({"jkNo": id, "jkName": format!("기수{}", id.get(3..)?.trim_start_matches('0')),
                            "spDate": "-", "rcCntT": 300, "ord1CntT": 30, "winRateT": 10.0})]
            }
            TRAINER => vec![json!({"trNo": param(query, "tr_no")?, "trName": "조교사", "rcCntT": 200, "ord1CntT": 20})],
            OWNER => vec![json!({"owNo": param(query, "ow_no")?.parse::<i64>().ok()?, "owName": "마주"})],
            _ => return None,
        };
        Some(rows)
    }

    fn control(&self, path: &str, query: &[(String, String)]) -> Option<String> {
        match path {
            "run" => {
                let through = parse_date(param(query, "through")?)?;
                self.run_through(through);
                Some(format!("every race through {through} has run\n"))
            }
            "season" => {
                let mut lines = String::new();
                for ((date, meet), races) in &self.days {
                    lines.push_str(&format!("{date} {} {} races\n", meet.name(), races.len()));
                }
                Some(lines)
            }
            _ => None,
        }
    }
}
