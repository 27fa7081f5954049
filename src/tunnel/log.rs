//! The tunnel's log (stderr or kcptun's `--log` file), kcptun's SNMP CSV
//! log (`--snmplog`, `--snmpperiod`) and its SIGUSR1 counter dump line.

use std::io::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::stats::{self, Snmp};

use super::TunnelError;

/// Where the tunnel's messages go. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Log {
    sink: Arc<Sink>,
}

#[derive(Debug)]
enum Sink {
    Stderr,
    File(Mutex<std::fs::File>),
}

impl Log {
    /// Messages to stderr.
    pub fn stderr() -> Log {
        Log {
            sink: Arc::new(Sink::Stderr),
        }
    }

    /// Messages appended to `path` (kcptun's `--log`); empty means stderr.
    pub fn open(path: &str) -> Result<Log, TunnelError> {
        if path.is_empty() {
            return Ok(Log::stderr());
        }
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| TunnelError::Io {
                what: format!("--log {path}"),
                source,
            })?;
        Ok(Log {
            sink: Arc::new(Sink::File(Mutex::new(f))),
        })
    }

    /// Writes one line, prefixed with the Unix time.
    pub fn line(&self, msg: &str) {
        let line = format!("{} {msg}\n", unix_now());
        match &*self.sink {
            Sink::Stderr => {
                let _ = std::io::stderr().write_all(line.as_bytes());
            }
            Sink::File(f) => {
                let mut f = f.lock().unwrap_or_else(|e| e.into_inner());
                let _ = f.write_all(line.as_bytes());
            }
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// kcptun's SIGUSR1 line: `KCP SNMP:` and Go's `%+v` of the counters.
pub fn snmp_dump_line(s: &Snmp) -> String {
    let fields: Vec<String> = s.fields().map(|(n, v)| format!("{n}:{v}")).collect();
    format!("KCP SNMP:&{{{}}}", fields.join(" "))
}

/// kcptun's SNMP CSV columns after `Unix`: kcp-go's `Snmp.Header()` in its
/// order and spelling, which differ from the struct (`FECFullShards` is the
/// `FECFullShardSet` counter, and the FEC columns are reordered). Each entry
/// is (CSV column, [`Snmp`] field name). Taken from the first line kcptun
/// 20210922 rebuilt on kcp-go v5.6.64 and on v5.7.6 writes with
/// `--snmplog x.csv --snmpperiod 1` (both identical).
pub const SNMP_CSV_COLUMNS: [(&str, &str); 30] = [
    ("BytesSent", "BytesSent"),
    ("BytesReceived", "BytesReceived"),
    ("MaxConn", "MaxConn"),
    ("ActiveOpens", "ActiveOpens"),
    ("PassiveOpens", "PassiveOpens"),
    ("CurrEstab", "CurrEstab"),
    ("InErrs", "InErrs"),
    ("InCsumErrors", "InCsumErrors"),
    ("KCPInErrors", "KCPInErrors"),
    ("InPkts", "InPkts"),
    ("OutPkts", "OutPkts"),
    ("InSegs", "InSegs"),
    ("OutSegs", "OutSegs"),
    ("InBytes", "InBytes"),
    ("OutBytes", "OutBytes"),
    ("RetransSegs", "RetransSegs"),
    ("FastRetransSegs", "FastRetransSegs"),
    ("EarlyRetransSegs", "EarlyRetransSegs"),
    ("LostSegs", "LostSegs"),
    ("RepeatSegs", "RepeatSegs"),
    ("FECFullShards", "FECFullShardSet"),
    ("FECParityShards", "FECParityShards"),
    ("FECErrs", "FECErrs"),
    ("FECRecovered", "FECRecovered"),
    ("FECShardSet", "FECShardSet"),
    ("FECShardMin", "FECShardMin"),
    ("RingBufferSndQueue", "RingBufferSndQueue"),
    ("RingBufferRcvQueue", "RingBufferRcvQueue"),
    ("RingBufferSndBuffer", "RingBufferSndBuffer"),
    ("OOBPackets", "OOBPackets"),
];

/// kcptun's SNMP CSV header line (without the newline).
pub fn snmp_csv_header() -> String {
    let mut out = String::from("Unix");
    for (col, _) in SNMP_CSV_COLUMNS {
        out.push(',');
        out.push_str(col);
    }
    out
}

/// Appends one kcptun SNMP CSV row (`Unix` then kcp-go's counters, header
/// first in an empty file) to the file `path` names at `now`: the file
/// name part is a Go time layout (`snmp-20060102.log`), read in UTC.
pub fn write_snmp_row(
    path: &str,
    now: SystemTime,
    snmp: &Snmp,
) -> std::io::Result<std::path::PathBuf> {
    let (dir, file) = match path.rfind('/') {
        Some(i) => (&path[..=i], &path[i + 1..]),
        None => ("", path),
    };
    let secs = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let name = format!("{dir}{}", go_time_format(file, secs));
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&name)?;
    let mut out = String::new();
    if f.metadata()?.len() == 0 {
        out.push_str(&snmp_csv_header());
        out.push('\n');
    }
    out.push_str(&secs.to_string());
    for (_, field) in SNMP_CSV_COLUMNS {
        out.push(',');
        out.push_str(&snmp.get(field).unwrap_or(0).to_string());
    }
    out.push('\n');
    f.write_all(out.as_bytes())?;
    Ok(Path::new(&name).to_path_buf())
}

/// Every `period`, appends a row of the process-wide counters to `path`
/// (kcptun's `SnmpLogger`; like current kcptun it does not reset them).
/// Stops at the first file error, as kcptun does, after logging it.
pub(crate) async fn snmp_logger(path: String, period: Duration, log: Log) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        tick.tick().await;
        if let Err(e) = write_snmp_row(&path, SystemTime::now(), &stats::global()) {
            log.line(&format!("snmplog {path}: {e}"));
            return;
        }
    }
}

/// Formats UTC `secs` by a Go time layout (the reference time
/// `Mon Jan 2 15:04:05 MST 2006`); text that is no layout element is kept.
pub fn go_time_format(layout: &str, secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let sod = secs % 86_400;
    let (y, mo, d) = civil_from_days(days);
    let (h, mi, s) = (sod / 3600, sod / 60 % 60, sod % 60);
    // 1970-01-01 was a Thursday.
    let wd = ((days % 7 + 7 + 4) % 7) as usize;
    const MON: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAY: [&str; 7] = [
        "Sunday",
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
    ];
    let h12 = if h % 12 == 0 { 12 } else { h % 12 };
    let yday = days - days_from_civil(y, 1, 1) + 1;
    // Longest element first where one is a prefix of another.
    let elems: [(&str, String); 24] = [
        ("January", MON[mo as usize - 1].to_string()),
        ("Jan", MON[mo as usize - 1][..3].to_string()),
        ("Monday", DAY[wd].to_string()),
        ("Mon", DAY[wd][..3].to_string()),
        ("MST", "UTC".into()),
        ("2006", format!("{y:04}")),
        ("-07:00", "+00:00".into()),
        ("-0700", "+0000".into()),
        ("-07", "+00".into()),
        ("Z07:00", "Z".into()),
        ("Z0700", "Z".into()),
        ("002", format!("{yday:03}")),
        ("01", format!("{mo:02}")),
        ("02", format!("{d:02}")),
        ("_2", format!("{d:>2}")),
        ("06", format!("{:02}", y % 100)),
        ("15", format!("{h:02}")),
        ("03", format!("{h12:02}")),
        ("04", format!("{mi:02}")),
        ("05", format!("{s:02}")),
        ("PM", if h >= 12 { "PM" } else { "AM" }.into()),
        ("pm", if h >= 12 { "pm" } else { "am" }.into()),
        ("1", mo.to_string()),
        ("2", d.to_string()),
    ];
    let singles: [(&str, String); 3] = [
        ("3", h12.to_string()),
        ("4", mi.to_string()),
        ("5", s.to_string()),
    ];
    let mut out = String::new();
    let mut rest = layout;
    'outer: while !rest.is_empty() {
        for (pat, val) in elems.iter().chain(singles.iter()) {
            if let Some(r) = rest.strip_prefix(pat) {
                out.push_str(val);
                rest = r;
                continue 'outer;
            }
        }
        let c = rest.chars().next().expect("non-empty");
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_layouts() {
        // 2024-02-29 13:04:05 UTC, a Thursday.
        let t = 1_709_211_845;
        assert_eq!(go_time_format("snmp-20060102.log", t), "snmp-20240229.log");
        assert_eq!(
            go_time_format("x-2006-01-02T15:04:05", t),
            "x-2024-02-29T13:04:05"
        );
        assert_eq!(go_time_format("Mon Jan _2 3PM 06", t), "Thu Feb 29 1PM 24");
        assert_eq!(go_time_format("plain.csv", t), "plain.csv");
        assert_eq!(go_time_format("", 0), "");
        assert_eq!(go_time_format("20060102150405", 0), "19700101000000");
    }

    #[test]
    fn dump_line_is_go_plus_v() {
        let s = Snmp {
            bytes_sent: 7,
            ..Snmp::default()
        };
        let l = snmp_dump_line(&s);
        assert!(
            l.starts_with("KCP SNMP:&{BytesSent:7 BytesReceived:0 "),
            "{l}"
        );
        assert!(l.ends_with('}'));
        assert_eq!(l.matches(':').count(), 1 + Snmp::header().len());
    }

    /// The first line of the snmplog file written by kcptun 20210922 rebuilt on
    /// kcp-go v5.6.64 (and, identically, on v5.7.6), run as
    /// `kcptun-server -l 127.0.0.1:29911 -t 127.0.0.1:1 --snmplog s.csv --snmpperiod 1`.
    const KCPTUN_CSV_HEADER: &str =
        "Unix,BytesSent,BytesReceived,MaxConn,ActiveOpens,PassiveOpens,\
        CurrEstab,InErrs,InCsumErrors,KCPInErrors,InPkts,OutPkts,InSegs,OutSegs,InBytes,OutBytes,\
        RetransSegs,FastRetransSegs,EarlyRetransSegs,LostSegs,RepeatSegs,FECFullShards,\
        FECParityShards,FECErrs,FECRecovered,FECShardSet,FECShardMin,RingBufferSndQueue,\
        RingBufferRcvQueue,RingBufferSndBuffer,OOBPackets";

    #[test]
    fn csv_columns_name_real_snmp_fields() {
        assert_eq!(snmp_csv_header(), KCPTUN_CSV_HEADER);
        for (col, field) in SNMP_CSV_COLUMNS {
            assert!(
                Snmp::default().get(field).is_some(),
                "{col}: no field {field}"
            );
        }
        let mut fields: Vec<&str> = SNMP_CSV_COLUMNS.iter().map(|(_, f)| *f).collect();
        fields.sort_unstable();
        let mut all = Snmp::header();
        all.sort_unstable();
        assert_eq!(fields, all, "every counter appears exactly once");
    }

    #[test]
    fn csv_header_once_then_rows() {
        let dir = std::env::temp_dir().join(format!("kcptun-snmp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = format!("{}/snmp-20060102.csv", dir.display());
        let now = UNIX_EPOCH + Duration::from_secs(86_400 * 365);
        let s = Snmp {
            bytes_sent: 3,
            fec_full_shard_set: 9,
            ..Snmp::default()
        };
        let p1 = write_snmp_row(&path, now, &s).expect("row");
        let p2 = write_snmp_row(&path, now, &s).expect("row");
        assert_eq!(p1, p2);
        assert!(p1.ends_with("snmp-19710101.csv"), "{p1:?}");
        let text = std::fs::read_to_string(&p1).expect("read");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], KCPTUN_CSV_HEADER);
        assert!(lines[1].starts_with("31536000,3,0,"), "{}", lines[1]);
        // FECFullShardSet is kcptun's 22nd column (after Unix), not the struct's 21st field.
        let cols: Vec<&str> = lines[1].split(',').collect();
        assert_eq!(cols.len(), 31);
        assert_eq!(cols[21], "9", "{}", lines[1]);
        assert_eq!(cols[22], "0", "{}", lines[1]);
        assert_eq!(lines[1], lines[2]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
