//! The selector grammar, case by case: what matches, what does not, and where a broken one breaks.
//! Cases are written from Calico's selector documentation (operators and their meaning on a
//! missing label).

use super::*;

fn labels() -> Labels {
    [
        ("app", "web"),
        ("tier", "frontend"),
        ("app.kubernetes.io/name", "prometheus"),
        ("version", "v1.2.3"),
        ("empty", ""),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

#[test]
fn each_operator_matches_like_calico_documents_it() {
    let cases: &[(&str, bool)] = &[
        ("", true),
        ("   ", true),
        ("all()", true),
        ("global()", false),
        ("app == 'web'", true),
        ("app == \"web\"", true),
        ("app == 'db'", false),
        ("missing == 'x'", false),
        ("app != 'db'", true),
        ("app != 'web'", false),
        ("missing != 'x'", true),
        ("has(app)", true),
        ("has(missing)", false),
        ("!has(missing)", true),
        ("!has(app)", false),
        ("app in {'web', 'db'}", true),
        ("app in {'db'}", false),
        ("app in {}", false),
        ("missing in {'x'}", false),
        ("app not in {'db'}", true),
        ("app not in {'web', 'db'}", false),
        ("missing not in {'x'}", true),
        ("version contains '.2.'", true),
        ("version contains 'x'", false),
        ("missing contains ''", false),
        ("version starts with 'v1'", true),
        ("version starts with 'v2'", false),
        ("version ends with '.3'", true),
        ("version ends with '.4'", false),
        ("empty == ''", true),
        ("app.kubernetes.io/name == 'prometheus'", true),
        ("app == 'web' && tier == 'frontend'", true),
        ("app == 'web' && tier == 'backend'", false),
        ("app == 'db' || tier == 'frontend'", true),
        ("app == 'db' || tier == 'backend'", false),
        ("app == 'db' || app == 'web' && tier == 'backend'", false),
        ("(app == 'db' || app == 'web') && tier == 'frontend'", true),
        ("!(app == 'web')", false),
        ("!!has(app)", true),
        ("! app == 'db'", true),
        ("((has(app)))", true),
        ("has(app) && !has(missing) && app in {'web'} && version starts with 'v'", true),
        ("app=='web'&&tier=='frontend'", true),
    ];
    let l = labels();
    for (text, want) in cases {
        let sel = Selector::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(sel.matches(&l), *want, "`{text}` on {l:?}");
    }
}

#[test]
fn and_binds_tighter_than_or() {
    let sel = Selector::parse("a == '1' || b == '2' && c == '3'").unwrap();
    assert_eq!(sel, Selector::Or(vec![
        Selector::Eq("a".into(), "1".into()),
        Selector::And(vec![Selector::Eq("b".into(), "2".into()), Selector::Eq("c".into(), "3".into())]),
    ]));
}

#[test]
fn a_broken_selector_says_at_which_byte_it_broke() {
    let cases: &[(&str, usize, &str)] = &[
        ("app.kubernetes.io/name == 'prometheus", 26, "unterminated string"),
        ("app == \"web", 7, "unterminated string"),
        ("app == web", 7, "expected a quoted value"),
        ("app ==", 6, "found the end of the selector"),
        ("app", 3, "expected an operator after the label key `app`"),
        ("app = 'web'", 4, "unexpected character `=`"),
        ("app === 'web'", 6, "unexpected character `=`"),
        ("app equals 'web'", 4, "unknown operator `equals`"),
        ("(app == 'web'", 13, "expected `)`"),
        ("app == 'web')", 12, "unexpected `)` after a complete expression"),
        ("app == 'web' tier == 'x'", 13, "unexpected `tier` after a complete expression"),
        ("app == 'web' &&", 15, "expected a label key"),
        ("&& app == 'web'", 0, "expected a label key"),
        ("has(app", 7, "expected `)`"),
        ("has()", 4, "expected a label key"),
        ("app in {'a' 'b'}", 12, "expected `,`"),
        ("app in {'a',}", 12, "expected a quoted value"),
        ("app in 'a'", 7, "expected `{`"),
        ("app not {'a'}", 8, "expected `in`"),
        ("app starts 'a'", 11, "expected `with`"),
        ("app ends by 'a'", 9, "expected `with`"),
        ("app contains web", 13, "expected a quoted value"),
        ("all(", 4, "expected `)`"),
        ("app == 'web' & tier == 'x'", 13, "unexpected character `&`"),
        ("app == 'web' | tier == 'x'", 13, "unexpected character `|`"),
        ("app == 'wéb' && ?", 17, "unexpected character `?`"),
    ];
    for (text, at, message) in cases {
        let err = Selector::parse(text).expect_err(text);
        assert_eq!(err.at, *at, "`{text}`: {err}");
        assert!(err.message.contains(message), "`{text}`: {err}");
    }
}

#[test]
fn the_pointed_error_puts_the_caret_under_the_broken_byte() {
    let text = "app.kubernetes.io/name == 'prometheus";
    let err = Selector::parse(text).unwrap_err();
    let pointed = err.pointed(text);
    let lines: Vec<&str> = pointed.lines().collect();
    assert_eq!(lines[1].find('^'), Some(26), "{pointed}");
    assert!(err.to_string().starts_with("at byte 26: unterminated string"), "{err}");
}

#[test]
fn global_is_found_wherever_it_is_nested() {
    assert!(Selector::parse("global()").unwrap().uses_global());
    assert!(Selector::parse("has(a) && !(global() || has(b))").unwrap().uses_global());
    assert!(!Selector::parse("all() && has(global)").unwrap().uses_global());
}
