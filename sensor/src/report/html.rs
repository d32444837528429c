//! The findings as one self-contained HTML page: no network, no external
//! script, style or font (a Content-Security-Policy forbids any), so it opens
//! on an air-gapped laptop. The run's summary, the findings table (sortable,
//! filterable by segment and tool), a timeline per host (SVG: a lane per
//! host, a bar per tool from first to last seen, coloured by severity, alert
//! ticks, the evidence on hover) and each finding's evidence with flow ids,
//! community ids and pcap file and frame. Every string from the traffic is
//! escaped (and made inert for control characters); the page's script only
//! reads and reorders the DOM, never writes markup.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::IpAddr;

use super::Report;
use crate::findings::{inert, Finding};
use crate::time::Timestamp;

/// Text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in inert(s, 300).chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn time(t: Timestamp) -> String {
    let mut b = [0u8; 31];
    let s = t.rfc3339(&mut b);
    s.get(..19).unwrap_or(s).replace('T', " ")
}

fn colour(sev: Option<u8>) -> &'static str {
    match sev {
        Some(1) => "#c62828",
        Some(2) => "#ef6c00",
        Some(3) => "#f9a825",
        Some(4) => "#1565c0",
        _ => "#757575",
    }
}

const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}\
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top}\
td{max-width:36em;overflow-wrap:anywhere}\
th{background:#eee;cursor:pointer}tr.sev1 td:first-child{background:#ffcdd2}tr.sev2 td:first-child{background:#ffe0b2}\
.muted{color:#666}svg text{font:11px sans-serif}details{margin:.4em 0}code{font-size:12px}";

/// Sorting (click a header) and the two filters. Reads cells' text only.
const SCRIPT: &str = "(function(){var t=document.getElementById('findings');\
var rows=function(){return Array.prototype.slice.call(t.tBodies[0].rows)};\
var hs=t.tHead.rows[0].cells;for(var i=0;i<hs.length;i++){(function(i){hs[i].addEventListener('click',function(){\
var dir=hs[i].dataset.dir==='asc'?'desc':'asc';hs[i].dataset.dir=dir;var r=rows();\
r.sort(function(a,b){var x=a.cells[i].dataset.sort||a.cells[i].textContent,y=b.cells[i].dataset.sort||b.cells[i].textContent;\
var nx=parseFloat(x),ny=parseFloat(y);var c=(!isNaN(nx)&&!isNaN(ny))?nx-ny:x.localeCompare(y);return dir==='asc'?c:-c});\
r.forEach(function(x){t.tBodies[0].appendChild(x)})})})(i)}\
var seg=document.getElementById('f-segment'),tool=document.getElementById('f-tool');\
var apply=function(){rows().forEach(function(r){var ok=(!seg.value||r.dataset.segment===seg.value)&&(!tool.value||r.dataset.tool===tool.value);\
r.style.display=ok?'':'none'})};seg.addEventListener('change',apply);tool.addEventListener('change',apply);\
document.body.dataset.ready='1'})();";

/// The whole page.
pub fn page(r: &Report, findings: &[Finding]) -> String {
    let mut out = String::with_capacity(64 * 1024);
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'\">\
<title>spanwatch findings</title><style>");
    out.push_str(STYLE);
    out.push_str("</style></head><body>\n<h1>spanwatch findings</h1>\n");
    summary(&mut out, r, findings);
    table(&mut out, findings);
    timeline(&mut out, r, findings);
    evidence(&mut out, r, findings);
    let _ = writeln!(out, "<script>{SCRIPT}</script>\n</body></html>");
    out
}

fn summary(out: &mut String, r: &Report, findings: &[Finding]) {
    let run = &r.run;
    let span = match (run.first, run.last) {
        (Some(a), Some(b)) => format!("{} to {} (capture time, UTC)", time(a), time(b)),
        _ => "no timestamps".into(),
    };
    let caps: Vec<String> = run.captures.iter().take(20).map(|c| esc(c)).collect();
    let more = run.captures.len().saturating_sub(20) as u64 + run.more_captures;
    let sensors: Vec<String> = run.sensors.iter().map(|s| esc(s)).collect();
    let _ = writeln!(
        out,
        "<table id=\"summary\"><tr><th>captures</th><td>{} {}{}</td></tr>\
<tr><th>time span</th><td>{}</td></tr><tr><th>packets</th><td>{}</td></tr>\
<tr><th>sensor</th><td>{}</td></tr><tr><th>events</th><td>{} ({} alerts; {} unreadable lines)</td></tr>\
<tr><th>findings</th><td>{}</td></tr></table>",
        run.captures.len() as u64 + run.more_captures,
        caps.join(", "),
        if more > 0 { format!(" (+{more})") } else { String::new() },
        span,
        run.packets,
        if sensors.is_empty() { "unnamed".into() } else { sensors.join(", ") },
        run.events,
        run.alerts,
        run.unreadable,
        findings.len()
    );
}

fn options(label: &str, id: &str, values: &BTreeSet<String>) -> String {
    let mut s = format!("<label>{label} <select id=\"{id}\"><option value=\"\">all</option>");
    for v in values {
        let _ = write!(s, "<option value=\"{0}\">{0}</option>", esc(v));
    }
    s + "</select></label> "
}

fn table(out: &mut String, findings: &[Finding]) {
    let segs: BTreeSet<String> = findings.iter().map(seg_name).collect();
    let tools: BTreeSet<String> = findings.iter().map(|f| f.activity.tool.clone()).collect();
    out.push_str("<h2>Findings</h2>\n<p>");
    out.push_str(&options("segment", "f-segment", &segs));
    out.push_str(&options("tool", "f-tool", &tools));
    out.push_str("<span class=\"muted\">click a column to sort</span></p>\n<table id=\"findings\"><thead><tr>\
<th>sev</th><th>segment</th><th>tool</th><th>host</th><th>confidence</th><th>first seen</th><th>last seen</th>\
<th>active s</th><th>flows</th><th>evidence</th></tr></thead><tbody>\n");
    for f in findings {
        let a = &f.activity;
        let al = f.alerted.as_ref();
        let sev = al.map(|x| x.severity);
        let ev: Vec<String> = al
            .map(|x| x.evidence.iter().map(|e| esc(e)).collect())
            .unwrap_or_default();
        let more = al.map_or(0, |x| x.more);
        let _ = writeln!(
            out,
            "<tr class=\"finding sev{}\" data-segment=\"{}\" data-tool=\"{}\"><td>{}</td><td>{} ({})</td><td>{}</td><td>{}</td><td>{}</td>\
<td data-sort=\"{}\">{}</td><td data-sort=\"{}\">{}</td><td>{}</td><td>{}</td><td>{}{}</td></tr>",
            sev.unwrap_or(0),
            esc(&seg_name(f)),
            esc(&a.tool),
            sev.map_or("-".into(), |s| s.to_string()),
            esc(&seg_name(f)),
            a.segment_kind.as_str(),
            esc(&a.tool),
            a.host,
            al.map_or("-", |x| confidence(x.confidence)),
            a.first_seen.0,
            time(a.first_seen),
            a.last_seen.0,
            time(a.last_seen),
            a.active_seconds,
            a.flows,
            ev.join(", "),
            if more > 0 { format!(" (+{more})") } else { String::new() }
        );
    }
    out.push_str("</tbody></table>\n");
}

fn confidence(c: crate::detect::rules::Confidence) -> &'static str {
    use crate::detect::rules::Confidence::*;
    match c {
        High => "high",
        Medium => "medium",
        Low => "low",
    }
}

fn seg_name(f: &Finding) -> String {
    f.activity
        .segment
        .clone()
        .unwrap_or_else(|| "unknown".into())
}

/// One lane per host; a bar per tool from first to last seen; a tick per
/// alert kept; the axis in capture time.
fn timeline(out: &mut String, r: &Report, findings: &[Finding]) {
    let hosts: Vec<IpAddr> = {
        let mut h: Vec<IpAddr> = findings.iter().map(|f| f.activity.host).collect();
        h.sort();
        h.dedup();
        h
    };
    out.push_str("<h2>Timeline</h2>\n");
    if hosts.is_empty() {
        out.push_str("<p class=\"muted\">no findings</p>\n");
        return;
    }
    let t0 = findings
        .iter()
        .map(|f| f.activity.first_seen.0)
        .min()
        .unwrap_or(0);
    let t1 = findings
        .iter()
        .map(|f| f.activity.last_seen.0)
        .max()
        .unwrap_or(0)
        .max(t0 + 1);
    let (left, width, lane) = (150.0, 900.0, 28.0);
    let x = |t: i64| left + (t - t0) as f64 / (t1 - t0) as f64 * width;
    let height = 30.0 + lane * hosts.len() as f64;
    let _ = writeln!(
        out,
        "<svg id=\"timeline\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\">",
        left + width + 20.0,
        height + 10.0
    );
    for i in 0..=4 {
        let t = t0 + (t1 - t0) / 4 * i;
        let _ = writeln!(
            out,
            "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"0\" y2=\"{1}\" stroke=\"#ddd\"/><text x=\"{0:.1}\" y=\"{2}\" text-anchor=\"middle\">{3}</text>",
            x(t),
            height - 20.0,
            height,
            time(Timestamp(t))
        );
    }
    for (i, h) in hosts.iter().enumerate() {
        let y = 5.0 + lane * i as f64;
        let _ = writeln!(
            out,
            "<g class=\"lane\" data-host=\"{h}\"><text x=\"4\" y=\"{:.1}\">{h}</text>",
            y + 16.0
        );
        for f in findings.iter().filter(|f| f.activity.host == *h) {
            bar(out, r, f, &x, y);
        }
        out.push_str("</g>\n");
    }
    out.push_str("</svg>\n");
}

fn bar(out: &mut String, r: &Report, f: &Finding, x: &dyn Fn(i64) -> f64, y: f64) {
    let a = &f.activity;
    let sev = f.alerted.as_ref().map(|x| x.severity);
    let (x0, x1) = (x(a.first_seen.0), x(a.last_seen.0));
    let ev = f
        .alerted
        .as_ref()
        .map(|x| {
            x.evidence
                .iter()
                .map(|e| esc(e))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "<rect class=\"bar\" x=\"{x0:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"16\" fill=\"{}\" opacity=\"0.8\">\
<title>{} on {} (severity {}): {} to {}; {}</title></rect>",
        y + 4.0,
        (x1 - x0).max(3.0),
        colour(sev),
        esc(&a.tool),
        a.host,
        sev.map_or("-".into(), |s| s.to_string()),
        time(a.first_seen),
        time(a.last_seen),
        ev
    );
    let (sightings, _) = r.sightings(a.host, &a.tool);
    for s in sightings {
        let _ = writeln!(
            out,
            "<line class=\"tick\" x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{1:.1}\" y2=\"{2:.1}\" stroke=\"#000\"><title>{3}: {4}</title></line>",
            x(s.at.0),
            y + 2.0,
            y + 22.0,
            esc(&s.timestamp),
            esc(&s.signature)
        );
    }
}

/// Per finding, its alerts with where to find them.
fn evidence(out: &mut String, r: &Report, findings: &[Finding]) {
    out.push_str("<h2>Evidence</h2>\n");
    for f in findings {
        let a = &f.activity;
        let (sightings, more) = r.sightings(a.host, &a.tool);
        let _ = writeln!(
            out,
            "<details class=\"evidence\"><summary>{} on {} — {} alerts</summary>\n<table><tr><th>time</th><th>signature</th>\
<th>evidence</th><th>flow_id</th><th>community_id</th><th>pcap file</th><th>frame</th></tr>",
            esc(&a.tool),
            a.host,
            sightings.len() as u64 + more
        );
        for s in sightings {
            let ev: Vec<String> = s.evidence.iter().map(|e| esc(e)).collect();
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td>{} {}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
                esc(&s.timestamp),
                s.signature_id,
                esc(&s.signature),
                ev.join("<br>"),
                s.flow_id.map_or(String::new(), |f| f.to_string()),
                esc(s.community_id.as_deref().unwrap_or("")),
                esc(s.pcap_file.as_deref().unwrap_or("")),
                s.pcap_frame.map_or(String::new(), |f| f.to_string())
            );
        }
        if more > 0 {
            let _ = writeln!(
                out,
                "<tr><td colspan=\"7\" class=\"muted\">{more} more alerts not listed</td></tr>"
            );
        }
        out.push_str("</table></details>\n");
    }
}
