use super::*;

const EV: &[(&str, &str)] = &[("name", "a.ngrok-free.app")];

fn s(at: i64, new_flow: bool) -> Sighting<'static> {
    Sighting {
        host: "10.1.0.5".parse().expect("ip"),
        tool: "ngrok",
        at: Timestamp(at * 1_000_000_000),
        new_flow,
        category: "tunnel-agent",
        evidence: EV,
        strong: true,
        sanctioned: false,
        segment: Some("prod"),
        segment_kind: SegmentKind::Production,
    }
}

fn host() -> IpAddr {
    "10.1.0.5".parse().expect("ip")
}

#[test]
fn first_last_and_max_active_from_capture_time() {
    let mut l = Ledger::new(Some(Duration::from_secs(3600)));
    assert!(l.observe(&s(100, true)).first);
    let o = l.observe(&s(200, true));
    assert!(!o.first && !o.passed_max_active);
    let o = l
        .extend(host(), "ngrok", Timestamp(3701 * 1_000_000_000), 5000)
        .expect("known");
    assert!(o.passed_max_active);
    // reported once
    assert!(!l.observe(&s(3800, false)).passed_max_active);
    let a = l.get(host(), "ngrok").expect("entry");
    assert_eq!((a.flows, a.bytes, a.active_seconds), (2, 5000, 3700));
    assert_eq!(a.first_seen, Timestamp(100 * 1_000_000_000));
    assert_eq!(a.sightings.len(), 1);
    assert_eq!(a.sightings[0].count, 3);
}

#[test]
fn a_pause_longer_than_idle_after_starts_a_new_period() {
    let mut l = Ledger::default();
    l.persist();
    assert!(l.observe(&s(100, true)).first);
    l.observe(&s(200, true));
    let o = l.observe(&s(200 + 3601, true));
    assert!(o.first && o.resumed, "{o:?}");
    let a = l.get(host(), "ngrok").expect("entry");
    assert_eq!((a.first_seen.0 / 1_000_000_000, a.flows), (3801, 1));
    let u = l.take_updates();
    assert_eq!(u.len(), 2, "{u:?}");
    assert_eq!((u[0].first_seen.0 / 1_000_000_000, u[0].flows), (100, 2));
    assert_eq!(u[0].last_seen.0 / 1_000_000_000, 200);
    assert_eq!((u[1].first_seen.0 / 1_000_000_000, u[1].flows), (3801, 1));
    assert!(!l.has_updates());
}

#[test]
fn updates_carry_increments_and_the_whole_interval() {
    let mut l = Ledger::default();
    l.persist();
    l.observe(&s(100, true));
    let first = l.take_updates();
    assert_eq!((first[0].flows, first[0].sightings[0].count), (1, 1));
    l.observe(&s(150, false));
    l.extend(host(), "ngrok", Timestamp(160 * 1_000_000_000), 700);
    let u = l.take_updates();
    assert_eq!(u.len(), 1);
    assert_eq!((u[0].flows, u[0].bytes), (0, 700));
    assert_eq!(u[0].first_seen.0 / 1_000_000_000, 100);
    assert_eq!(u[0].last_seen.0 / 1_000_000_000, 160);
    assert_eq!(u[0].sightings[0].count, 1);
    // put back and merged with what came after
    l.untake(u);
    l.observe(&s(170, true));
    let u = l.take_updates();
    assert_eq!(
        (u[0].flows, u[0].bytes, u[0].sightings[0].count),
        (1, 700, 2)
    );
}

#[test]
fn a_restored_period_goes_on_and_passes_max_active() {
    let mut before = Ledger::default();
    before.observe(&s(100, true));
    let saved = before.snapshot();
    let mut l = Ledger::new(Some(Duration::from_secs(600)));
    l.restore(saved);
    let o = l.observe(&s(800, true));
    assert!(!o.first && o.passed_max_active, "{o:?}");
    assert_eq!(l.get(host(), "ngrok").expect("e").flows, 2);
}

#[test]
fn the_merged_interval_widens_the_period() {
    let mut l = Ledger::new(Some(Duration::from_secs(600)));
    l.observe(&s(1000, true));
    l.merged(
        host(),
        "ngrok",
        Timestamp(100 * 1_000_000_000),
        Timestamp(900 * 1_000_000_000),
    );
    assert!(l.observe(&s(1001, false)).passed_max_active);
    // a far earlier period of another sensor is not this one
    let mut l = Ledger::new(Some(Duration::from_secs(600)));
    l.observe(&s(10_000, true));
    l.merged(host(), "ngrok", Timestamp(0), Timestamp(1_000_000_000));
    assert!(!l.observe(&s(10_001, false)).passed_max_active);
}

#[test]
fn distinct_values_are_bounded_and_counted() {
    let mut l = Ledger::default();
    let names: Vec<String> = (0..SIGHTINGS_PER_ENTRY + 5)
        .map(|i| format!("n{i}.ngrok-free.app"))
        .collect();
    for (i, n) in names.iter().enumerate() {
        let ev = [("name", n.as_str())];
        let mut x = s(100 + i as i64, true);
        x.evidence = &ev;
        l.observe(&x);
    }
    let a = l.get(host(), "ngrok").expect("e");
    assert_eq!(a.sightings.len(), SIGHTINGS_PER_ENTRY);
    assert_eq!(l.sightings_dropped, 5);
}

#[test]
fn an_earlier_sighting_is_a_period_of_its_own() {
    let mut l = Ledger::default();
    l.persist();
    l.observe(&s(100_000, true));
    l.take_updates();
    let o = l.observe(&s(100, true));
    assert!(!o.first);
    let u = l.take_updates();
    assert_eq!(u.len(), 1);
    assert_eq!((u[0].first_seen.0 / 1_000_000_000, u[0].flows), (100, 1));
    assert_eq!(l.get(host(), "ngrok").expect("e").flows, 1);
}
