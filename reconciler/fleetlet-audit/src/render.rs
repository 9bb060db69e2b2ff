//! A [`Report`] for people: a text table for the terminal and a single self-contained HTML
//! page (inline CSS, no script, nothing fetched) for those who would rather look than read.
//! (JSON is the report's serde form.)
//!
//! Almost everything shown comes from site logs, and a site may be hostile: text output
//! replaces control characters (no terminal escapes), HTML escapes every string, and the page
//! forbids scripts outright in case something were ever missed.

use crate::record::{Action, Signer, Workload};
use crate::report::{Report, ReportProblem, Run, SiteReport, SiteStatus};
use std::fmt::Write as _;

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn format_time(t: i64) -> String {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// `s` safe for a terminal: control characters and the bidirectional overrides and isolates
/// (which can make text read in another order than it is) become `?`.
pub fn clean(s: &str) -> String {
    s.chars()
        .map(|c| {
            let bidi = matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}');
            if c.is_control() || bidi { '?' } else { c }
        })
        .collect()
}

/// The first 12 hex digits of a `sha256:<hex>` digest or a commit id.
fn short(id: &str) -> &str {
    let (prefix, hex) = id.split_once(':').unwrap_or(("", id));
    let end = prefix.len() + usize::from(!prefix.is_empty()) + hex.len().min(12);
    id.get(..end).unwrap_or(id)
}

fn signers(list: &[Signer]) -> String {
    list.iter()
        .map(|s| s.identity.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn status_word(site: &SiteReport, run: Option<&Run>) -> &'static str {
    match (site.status, run) {
        (_, Some(r)) if r.to.is_none() => "running",
        (_, Some(_)) => "yes",
        (SiteStatus::Unknown, None) => "unknown",
        (_, None) => "no",
    }
}

/// What followed the run, from the entry that ended it.
fn ended_note(run: &Run) -> String {
    match &run.ended_by {
        Some(end) => match (end.action, end.commit.as_deref()) {
            (Action::RolledBack, Some(c)) => format!("rolled back to {}", short(c)),
            (Action::RolledBack, None) => "rolled back".into(),
            (_, Some(c)) => format!("replaced by {}", short(c)),
            (_, None) => String::new(),
        },
        None => String::new(),
    }
}

fn ended(run: &Run) -> String {
    match run.to {
        None => "still running".into(),
        Some(to) => match ended_note(run) {
            note if note.is_empty() => format_time(to),
            note => format!("{} ({note})", format_time(to)),
        },
    }
}

fn artifacts(workloads: &[Workload]) -> String {
    let mut items = Vec::new();
    for w in workloads {
        for a in &w.artifacts {
            let by = signers(&a.signers);
            items.push(if by.is_empty() {
                format!("{} {}", w.id, short(&a.digest))
            } else {
                format!("{} {} by {by}", w.id, short(&a.digest))
            });
        }
    }
    items.join("; ")
}

impl Report {
    /// How many sites ran the release, still run it, never did, and are unknown.
    fn counts(&self) -> (usize, usize, usize, usize) {
        let count = |s: SiteStatus| self.sites.iter().filter(|x| x.status == s).count();
        let running = count(SiteStatus::Running);
        (
            running + count(SiteStatus::Ran),
            running,
            count(SiteStatus::NeverRan),
            count(SiteStatus::Unknown),
        )
    }

    fn summary(&self) -> String {
        let (ran, running, never, unknown) = self.counts();
        format!(
            "{ran} of {} sites ran it ({running} still running), {never} never did, {unknown} unknown; {} problem(s)",
            self.sites.len(),
            self.problems.len()
        )
    }

    /// A table (site | ran | from | to | digests | signed by | last heard), one row per period
    /// a site ran the release, then the problems.
    pub fn to_text(&self) -> String {
        let mut rows: Vec<[String; 7]> = vec![
            [
                "SITE",
                "RAN",
                "FROM",
                "TO",
                "DIGESTS",
                "SIGNED BY",
                "LAST HEARD",
            ]
            .map(String::from),
        ];
        for site in &self.sites {
            let name = if site.disputed {
                format!("{} [disputed]", site.site)
            } else {
                site.site.clone()
            };
            let heard = site.last_heard.map_or("never".into(), format_time);
            if site.runs.is_empty() {
                rows.push([
                    name,
                    status_word(site, None).into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    heard,
                ]);
                continue;
            }
            for (i, run) in site.runs.iter().enumerate() {
                let first = i == 0;
                let by = signers(&run.commit_signers);
                rows.push([
                    if first { name.clone() } else { String::new() },
                    status_word(site, Some(run)).into(),
                    format_time(run.from),
                    ended(run),
                    artifacts(&run.workloads),
                    if by.is_empty() { "-".into() } else { by },
                    if first { heard.clone() } else { String::new() },
                ]);
            }
        }
        let rows: Vec<[String; 7]> = rows.into_iter().map(|r| r.map(|c| clean(&c))).collect();
        let mut widths = [0usize; 7];
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = format!("Release {}: {}\n\n", clean(&self.release), self.summary());
        for row in &rows {
            let mut line = String::new();
            for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                let _ = write!(line, "{cell:<w$}");
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        if !self.problems.is_empty() {
            out.push_str("\nProblems:\n");
            for p in &self.problems {
                let _ = writeln!(out, "- {}", clean(&p.to_string()));
            }
        }
        out
    }

    /// The report as one self-contained HTML page.
    pub fn to_html(&self) -> String {
        let mut h = String::with_capacity(16 << 10);
        let release = esc(&self.release);
        let _ = write!(
            h,
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
             <title>Release {release} — fleetlet audit report</title>\n<style>{CSS}</style>\n</head>\n<body>\n\
             <h1>Release <code>{release}</code></h1>\n<p class=\"summary\">{}</p>\n",
            esc(&self.summary())
        );
        h.push_str(
            "<table>\n<thead><tr><th>Site</th><th>Ran</th><th>From</th><th>To</th>\
             <th>Artifacts (digest, signed by)</th><th>Commit signed by</th><th>Last heard</th></tr></thead>\n<tbody>\n",
        );
        for site in &self.sites {
            let span = site.runs.len().max(1);
            let heard = site.last_heard.map_or("never".into(), time_html);
            let mut site_cell =
                format!("<td rowspan=\"{span}\" class=\"site\">{}", esc(&site.site));
            if site.disputed {
                site_cell.push_str(" <span class=\"badge disputed\">disputed</span>");
            }
            if let Some(file) = &site.export {
                let _ = write!(site_cell, "<div class=\"file\">{}</div>", esc(file));
            }
            site_cell.push_str("</td>");
            let heard_cell = format!("<td rowspan=\"{span}\">{heard}</td>");
            if site.runs.is_empty() {
                let word = status_word(site, None);
                let _ = writeln!(
                    h,
                    "<tr>{site_cell}<td><span class=\"badge {word}\">{word}</span></td>\
                     <td>–</td><td>–</td><td>–</td><td>–</td>{heard_cell}</tr>"
                );
                continue;
            }
            for (i, run) in site.runs.iter().enumerate() {
                let word = status_word(site, Some(run));
                h.push_str("<tr>");
                if i == 0 {
                    h.push_str(&site_cell);
                }
                let mut commit = esc(&run.commit);
                if !run.tags.is_empty() {
                    let _ = write!(commit, " ({})", esc(&run.tags.join(", ")));
                }
                let _ = write!(
                    h,
                    "<td><span class=\"badge {word}\">{word}</span></td><td>{}<div class=\"commit\">{commit}</div></td><td>{}</td>",
                    time_html(run.from),
                    ended_html(run)
                );
                h.push_str("<td>");
                artifacts_html(&mut h, &run.workloads);
                h.push_str("</td><td>");
                signers_html(&mut h, &run.commit_signers);
                h.push_str("</td>");
                if i == 0 {
                    h.push_str(&heard_cell);
                }
                h.push_str("</tr>\n");
            }
        }
        h.push_str("</tbody>\n</table>\n");
        let _ = writeln!(h, "<h2>Problems ({})</h2>", self.problems.len());
        if self.problems.is_empty() {
            h.push_str("<p class=\"none\">None: every site listed sent an export, and every export verified.</p>\n");
        } else {
            h.push_str("<ul class=\"problems\">\n");
            for p in &self.problems {
                let _ = writeln!(
                    h,
                    "<li><span class=\"kind\">{}</span> {}</li>",
                    problem_kind(p),
                    esc(&p.to_string())
                );
            }
            h.push_str("</ul>\n");
        }
        h.push_str("</body>\n</html>\n");
        h
    }
}

const CSS: &str = "\
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em;color:#1b1f24;background:#fff}\
h1{font-size:1.5em;margin:0 0 .3em}h2{font-size:1.2em;margin-top:2em}\
code,.commit,.file,.digest{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.9em}\
.summary{color:#444}\
table{border-collapse:collapse;width:100%}\
th,td{border:1px solid #d0d7de;padding:.4em .6em;text-align:left;vertical-align:top}\
th{background:#f6f8fa}\
.site{font-weight:600;white-space:nowrap}.file,.commit,.ref{color:#57606a;font-weight:normal;word-break:break-all}\
.digest{word-break:break-all}\
ul.arts{margin:0;padding-left:1.1em}\
.badge{display:inline-block;padding:0 .5em;border-radius:1em;font-size:.85em;white-space:nowrap}\
.running{background:#dafbe1;color:#116329}.yes{background:#ddf4ff;color:#0550ae}\
.no{background:#eaeef2;color:#424a53}.unknown,.disputed{background:#fff1e5;color:#953800}\
.problems li{margin:.3em 0}.kind{display:inline-block;min-width:9em;font-weight:600;color:#cf222e}\
.none{color:#116329}";

/// Escapes text for HTML element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

fn time_html(t: i64) -> String {
    let s = format_time(t);
    format!("<time datetime=\"{s}\">{s}</time>")
}

fn ended_html(run: &Run) -> String {
    match run.to {
        None => "<span class=\"badge running\">still running</span>".into(),
        Some(to) => format!(
            "{}<div class=\"commit\">{}</div>",
            time_html(to),
            esc(&ended_note(run))
        ),
    }
}

fn artifacts_html(h: &mut String, workloads: &[Workload]) {
    if workloads.iter().all(|w| w.artifacts.is_empty()) {
        h.push('–');
        return;
    }
    h.push_str("<ul class=\"arts\">");
    for w in workloads {
        for a in &w.artifacts {
            let _ = write!(
                h,
                "<li>{} <span class=\"digest\">{}</span>",
                esc(&w.id),
                esc(&a.digest)
            );
            if !a.signers.is_empty() {
                h.push_str(" by ");
                signers_html(h, &a.signers);
            }
            let _ = write!(h, "<div class=\"ref\">{}</div></li>", esc(&a.reference));
        }
    }
    h.push_str("</ul>");
}

fn signers_html(h: &mut String, list: &[Signer]) {
    if list.is_empty() {
        h.push('–');
        return;
    }
    for (i, s) in list.iter().enumerate() {
        if i > 0 {
            h.push_str(", ");
        }
        let title = match &s.detail {
            Some(d) => format!("{}: {d}", s.kind),
            None => s.kind.clone(),
        };
        let _ = write!(
            h,
            "<span title=\"{}\">{}</span>",
            esc(&title),
            esc(&s.identity)
        );
    }
}

fn problem_kind(p: &ReportProblem) -> &'static str {
    match p {
        ReportProblem::Unreadable { .. } => "unreadable",
        ReportProblem::BadExport { .. } => "bad export",
        ReportProblem::UnknownSite { .. } => "unknown site",
        ReportProblem::WrongKey { .. } => "wrong key",
        ReportProblem::BrokenLog { .. } => "broken log",
        ReportProblem::Disagree { .. } => "disagreeing exports",
        ReportProblem::Shrunk { .. } => "log went backwards",
        ReportProblem::NeverHeardFrom { .. } => "never heard from",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_escapes() {
        let cases = [
            (0, "1970-01-01T00:00:00Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (1_700_000_000, "2023-11-14T22:13:20Z"),
            (-1, "1969-12-31T23:59:59Z"),
        ];
        for (t, want) in cases {
            assert_eq!(format_time(t), want);
        }
        assert_eq!(
            esc("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(clean("a\u{1b}[31mb\n"), "a?[31mb?");
        assert_eq!(clean("evil\u{202E}txt.exe\u{2066}"), "evil?txt.exe?");
        assert_eq!(short("sha256:0123456789abcdef"), "sha256:0123456789ab");
        assert_eq!(short("0123456789abcdef0123"), "0123456789ab");
        assert_eq!(short("abc"), "abc");
    }
}
