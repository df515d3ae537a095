//! Property tests: the encoders and parsers against arbitrary input. Each
//! property runs `CASES` cases in `cargo test`; README records longer runs
//! (`PROPTEST_CASES=100000 cargo test -p usage-sync-plugin --test properties`).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed property

use proptest::prelude::*;
use usage_sync_plugin::exports::usage_sync::workflow::workflow::{Inputs, Interval, Options};
use usage_sync_plugin::{amberflo, decimal, form, inputs, quantity, stripe, time};

const CASES: u32 = 2000;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(CASES),
        ..ProptestConfig::default()
    }
}

/// A form decoder as a server has it (`+` is a space, `%XX` a byte).
fn decode(body: &str) -> Vec<(String, String)> {
    let unescape = |text: &str| {
        let mut out = Vec::new();
        let b = text.as_bytes();
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'+' => out.push(b' '),
                b'%' => {
                    out.push(u8::from_str_radix(&text[i + 1..i + 3], 16).unwrap());
                    i += 2;
                }
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8(out).unwrap()
    };
    if body.is_empty() {
        return Vec::new();
    }
    body.split('&')
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap();
            (unescape(k), unescape(v))
        })
        .collect()
}

fn options(interval: Interval) -> Options {
    Options {
        max_retries: 2,
        retry_budget_ms: 60_000,
        rounding: None,
        reconcile: false,
        dry_run: false,
        interval,
        scale: None,
        true_up: false,
        allow_decrease: false,
        settle_hours: 72,
        attempt_header: false,
        carry_late_usage: false,
    }
}

proptest! {
    #![proptest_config(config())]

    /// Exact decimals: the digits read as the standard library reads them,
    /// then normalized and shown by hand, against `Decimal`'s reading; and
    /// what it shows reads back as the same value.
    #[test]
    fn decimals_read_their_digits_exactly(
        negative in any::<bool>(),
        int in "[0-9]{1,45}",
        frac in proptest::option::of("[0-9]{1,20}"),
        exp in proptest::option::of(-25i32..25),
    ) {
        let mut text = format!("{}{int}", if negative { "-" } else { "" });
        if let Some(frac) = &frac {
            text.push('.');
            text.push_str(frac);
        }
        if let Some(exp) = exp {
            text.push_str(&format!("e{exp}"));
        }
        let frac = frac.unwrap_or_default();
        let digits = format!("{int}{frac}");
        let digits = digits.trim_start_matches('0');
        let mut scale = frac.len() as i64 - i64::from(exp.unwrap_or(0));
        // What the text should read as: Ok(shown), or Err(part of the error).
        let expected: Result<String, &str> = match digits.parse::<i128>() {
            _ if digits.is_empty() => Ok("0".into()),
            Err(_) => Err("out of range"),
            Ok(mut units) => {
                while scale > 0 && units % 10 == 0 {
                    units /= 10;
                    scale -= 1;
                }
                let units = match scale {
                    0.. => Some(units),
                    _ => 10i128.checked_pow((-scale) as u32).and_then(|f| units.checked_mul(f)),
                };
                match units {
                    None => Err("out of range"),
                    Some(_) if scale > 18 => Err("digits after the point"),
                    Some(units) => {
                        let scale = scale.max(0) as usize;
                        let mut shown = format!("{units:0>width$}", width = scale + 1);
                        if scale > 0 {
                            shown.insert(shown.len() - scale, '.');
                        }
                        Ok(format!("{}{shown}", if negative { "-" } else { "" }))
                    }
                }
            }
        };
        match (decimal::Decimal::parse(&text), expected) {
            (Ok(value), Ok(shown)) => {
                prop_assert_eq!(&value.to_string(), &shown, "{}", text);
                // What `query-usage` hands on as text reads back as itself.
                prop_assert_eq!(decimal::Decimal::parse(&shown), Ok(value), "{}", text);
            }
            (Err(why), Err(part)) => prop_assert!(why.contains(part), "{}: {}", text, why),
            (got, want) => prop_assert!(false, "{}: {:?}, expected {:?}", text, got, want),
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn form_encoding_decodes_back_to_the_fields(fields in prop::collection::vec((any::<String>(), any::<String>()), 0..6)) {
        let body = form::encode(&fields);
        let safe = |c: char| c.is_ascii_alphanumeric() || "_.-~[]+%&=".contains(c);
        prop_assert!(body.chars().all(safe), "{body}");
        prop_assert_eq!(decode(&body), fields);
    }

    #[test]
    fn time_parsing_never_panics_and_round_trips(text in any::<String>(), t in 0i64..253_402_300_799) {
        let _ = time::parse(&text);
        prop_assert_eq!(time::parse(&time::format(t)), Ok(t));
        prop_assert_eq!(time::parse(&t.to_string()), Ok(t));
    }

    #[test]
    fn accepted_quantities_are_canonical_integers(text in "-?[0-9]{0,17}|.{0,20}") {
        if let Ok(q) = quantity::whole_number(&text) {
            let n: i64 = q.parse().unwrap();
            prop_assert_eq!(n.to_string(), q);
            prop_assert!(n.unsigned_abs() < 1_000_000_000_000_000);
        }
    }

    #[test]
    fn response_parsers_never_panic(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = amberflo::parse_response(&body, "acme", inputs::Window { start: 0, end: 86_400 }, 3600);
        let _ = amberflo::error_message(&body);
        let _ = stripe::parse_event(&body);
        let _ = stripe::parse_error(&body);
    }

    /// Whatever Amberflo answers, the total billed is exactly the sum of the
    /// in-window, on-grid buckets of the customer asked for, each listed
    /// once, among the answer's intervals when it lists them, and adding up
    /// to the group's `groupValue` when it states one; or the answer is
    /// refused (and nothing is written). The batch path agrees.
    #[test]
    fn amberflo_answers_are_billed_exactly_or_refused(
        groups in prop::collection::vec(
            (
                prop::sample::select(vec![Some("acme"), Some("globex"), None]),
                any::<bool>(),
                prop::collection::vec((-2i64..5, any::<bool>(), prop_oneof![
                    8 => (-1_000_000i64..1_000_000).prop_map(Ok),
                    1 => prop::sample::select(vec!["\"5\"", "null", "1e309", "true"]).prop_map(Err),
                ]), 0..6),
                // groupValue: absent, the exact sum, the float sum, a milli off.
                0u8..4,
            ),
            0..3,
        ),
        listed in proptest::option::of(prop::collection::vec(any::<bool>(), 3)),
    ) {
        const DAY: i64 = 86_400;
        let window = inputs::Window { start: 0, end: 3 * DAY };
        let mut valid = groups.len() <= 1;
        let mut expected_millis: i128 = 0;
        let json_groups: Vec<String> = groups.iter().map(|(customer, has_values, points, stated)| {
            valid &= *has_values && *customer != Some("globex");
            let mut seen = std::collections::HashSet::new();
            let (mut millis_sum, mut float_sum) = (0i128, 0f64);
            let points: Vec<String> = points.iter().map(|(day, aligned, value)| {
                let t = day * DAY + if *aligned { 0 } else { 3600 };
                valid &= (0..3).contains(day) && *aligned;
                valid &= seen.insert(t);
                if let Some(listed) = &listed {
                    valid &= (0..3).contains(day) && listed[*day as usize];
                }
                let text = match value {
                    Ok(millis) => {
                        millis_sum += i128::from(*millis);
                        let sign = if *millis < 0 { "-" } else { "" };
                        let text = format!("{sign}{}.{:03}", millis.abs() / 1000, millis.abs() % 1000);
                        float_sum += text.parse::<f64>().unwrap();
                        text
                    }
                    Err(bad) => {
                        valid = false;
                        bad.to_string()
                    }
                };
                format!(r#"{{"value":{text},"secondsSinceEpochUtc":{t}}}"#)
            }).collect();
            expected_millis += millis_sum;
            let group = match customer {
                Some(c) => format!(r#"{{"groupInfo":{{"customerId":"{c}"}}}}"#),
                None => "null".into(),
            };
            let stated = match stated {
                1 => format!(r#","groupValue":{millis_sum}e-3"#),
                2 => format!(r#","groupValue":{}"#, serde_json::to_string(&float_sum).unwrap()),
                3 => {
                    valid = false;
                    format!(r#","groupValue":{}e-3"#, millis_sum + 1)
                }
                _ => String::new(),
            };
            let values = if *has_values { format!(r#","values":[{}]"#, points.join(",")) } else { String::new() };
            format!(r#"{{"group":{group}{stated}{values}}}"#)
        }).collect();
        let intervals = match &listed {
            Some(listed) => {
                let days: Vec<String> = (0..3).filter(|d| listed[*d as usize]).map(|d| (d * DAY).to_string()).collect();
                format!(r#""secondsSinceEpochIntervals":[{}],"#, days.join(","))
            }
            None => String::new(),
        };
        let body = format!(r#"{{{intervals}"clientMeters":[{}]}}"#, json_groups.join(","));
        let answer = amberflo::parse_response(body.as_bytes(), "acme", window, DAY);
        prop_assert_eq!(answer.is_ok(), valid, "{}", body);
        if let Ok(usage) = answer {
            let totals = usage.totals(&window.split(Some(DAY))).unwrap();
            let sum = totals.iter().try_fold(decimal::Decimal::ZERO, |s, t| s.checked_add(*t)).unwrap();
            let expected = decimal::Decimal::parse(&format!("{expected_millis}e-3")).unwrap();
            prop_assert_eq!(sum, expected, "{}", body);
        }
        // One group tagged `acme`: the batch path checks it the same way.
        if let [(Some("acme"), ..)] = groups.as_slice() {
            let split = amberflo::split_by_customer(body.as_bytes(), &["acme"], window, DAY);
            prop_assert_eq!(split.is_ok(), valid, "{}", body);
        }
    }

    #[test]
    fn validation_never_panics_and_plans_fit_stripe(
        customer in ".{0,12}", meter in ".{0,12}", stripe_customer in ".{0,12}", event in ".{0,12}",
        quantity in proptest::option::of(".{0,8}"),
        start in proptest::option::of(0i64..2_000_000_000), end in proptest::option::of(0i64..2_000_000_000),
        hourly in any::<bool>(),
    ) {
        let now = 1_900_000_000;
        let given = Inputs {
            customer_id: customer,
            meter_api_name: meter,
            stripe_customer,
            stripe_event_name: event,
            usage_quantity: quantity,
            start_time: start.map(|s| s.to_string()),
            end_time: end.map(|e| e.to_string()),
        };
        let interval = if hourly { Interval::Hour } else { Interval::Day };
        if let Ok(plan) = inputs::validate(given, &options(interval), now) {
            // Every accepted window lies on its interval's grid.
            let step = if hourly { 3600 } else { 86_400 };
            prop_assert_eq!(plan.window.start % step, 0);
            prop_assert_eq!(plan.window.end % step, 0);
            prop_assert_eq!(plan.intervals.first().unwrap().start, plan.window.start);
            prop_assert_eq!(plan.intervals.last().unwrap().end, plan.window.end);
            for interval in &plan.intervals {
                prop_assert!(interval.start < interval.end);
                prop_assert!(interval.timestamp() >= now - inputs::MAX_AGE);
                prop_assert!(interval.end <= now);
                let id = stripe::identifier(&plan, interval);
                prop_assert!(id.len() <= inputs::MAX_STRIPE_STRING);
            }
        }
    }

    /// A window is accepted only once it has ended: an interval still open
    /// has a partial total, which its identifier would lock in.
    #[test]
    fn only_ended_windows_are_accepted(hours_back in 1i64..800, hours in 1i64..24, offset in -7200i64..7200) {
        let end = 1_900_000_800 - hours_back * 3600 + 24 * 3600;
        let start = end - hours * 3600;
        let now = end + offset;
        let given = Inputs {
            customer_id: "acme".into(),
            meter_api_name: "api-calls".into(),
            stripe_customer: "cus_1".into(),
            stripe_event_name: "api_calls".into(),
            usage_quantity: None,
            start_time: Some(start.to_string()),
            end_time: Some(end.to_string()),
        };
        let plan = inputs::validate(given, &options(Interval::Hour), now);
        prop_assert_eq!(plan.is_ok(), offset >= 0, "{:?}", plan);
        if let Err(err) = plan {
            prop_assert!(err.contains("has not ended yet"), "{}", err);
            prop_assert!(err.contains(&time::format(end)), "{}", err);
            prop_assert!(err.contains(&time::format(now)), "{}", err);
        }
    }
}
