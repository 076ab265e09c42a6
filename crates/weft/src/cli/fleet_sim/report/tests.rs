use super::*;

#[test]
fn percentiles_are_nearest_rank() {
    let s = Spread::of((1..=100).map(f64::from).collect());
    assert_eq!((s.p50, s.p99, s.max, s.count), (50.0, 99.0, 100.0, 100));
    assert_eq!(Spread::of(vec![3.0]).p99, 3.0);
    assert_eq!(Spread::of(vec![]), Spread::default());
}
