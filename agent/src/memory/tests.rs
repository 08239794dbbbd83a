//! Memory on the scripted backend: long multilingual conversations with tools in a small window.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use corral_prompts::llama31::{Llama31, Style};
use corral_prompts::{Conversation, Message};
use corral_tools::{FnTool, Registry, ToolSpec};
use serde_json::json;
use unicode_segmentation::UnicodeSegmentation;

use super::language::detect;
use super::samples::UDHR;
use super::summary::SUMMARY_REQUEST;
use super::*;
use crate::agent::{Agent, Decision, Event, Policy, TurnOptions, TurnStop};
use crate::engine::{ScriptedBackend, ScriptedReply};

const EOM: &str = "<|eom_id|>";
const EOT: &str = "<|eot_id|>";

fn format() -> Llama31 {
    Llama31 {
        tools_in_user_message: false,
        ..Llama31::new(Style::Template).with_date(Some("26 Jul 2024".into()))
    }
}

fn registry() -> Registry {
    let mut reg = Registry::new();
    let spec = ToolSpec {
        name: "lookup".into(),
        description: Some("looks a word up".into()),
        parameters: json!({
            "type": "object",
            "properties": {"word": {"type": "string"}},
            "required": ["word"]
        }),
    };
    reg.register(
        Arc::new(FnTool::new(spec, |args| {
            let word = args["word"].as_str().unwrap_or("");
            // Long results, in Hindi, so cuts inside the current turn hit grapheme clusters.
            let n = if word == "big" { 40 } else { 3 };
            Ok(format!("{word}: {}", "क्षत्रिय अनुच्छेद ".repeat(n)))
        })),
        "builtin",
    )
    .unwrap();
    reg
}

fn options() -> TurnOptions {
    TurnOptions {
        max_tokens: Some(128),
        policy: Policy {
            default: Decision::Allow,
            tools: BTreeMap::new(),
        },
        ..TurnOptions::default()
    }
}

fn sentences(lang: Language) -> Vec<String> {
    let text = UDHR.iter().find(|(l, _)| *l == lang).unwrap().1;
    let parts: Vec<String> = match lang {
        Language::Th => text.split(' ').map(str::to_owned).collect(),
        _ => text
            .split_inclusive(['.', '।'])
            .map(|s| s.trim().to_owned())
            .collect(),
    };
    parts
        .into_iter()
        .filter(|s| s.graphemes(true).count() >= 30)
        .collect()
}

/// What the scripted model saw of summaries: the language each was asked in.
type Asked = Arc<Mutex<Vec<String>>>;

/// The test double: answers, calls `lookup` when a message asks a question, and plays the
/// summariser (previous summary's facts plus new ones, and a sentence in the asked language).
fn responder(asked: Asked) -> impl FnMut(&str) -> ScriptedReply + Send {
    // Calls made for each user message (its steps may be folded out of the prompt).
    let mut calls: BTreeMap<String, usize> = BTreeMap::new();
    move |prompt: &str| {
        if prompt.contains(SUMMARY_REQUEST) {
            let language = Language::ALL
                .into_iter()
                .find(|l| prompt.contains(&format!("Write the summary in {}.", l.english_name())))
                .unwrap_or(Language::En);
            asked.lock().unwrap().push(language.code().to_owned());
            let mut facts: Vec<&str> = prompt
                .lines()
                .filter(|l| l.contains("4711") || l.contains("Ada"))
                .collect();
            facts.dedup();
            let facts: Vec<String> = facts
                .iter()
                .take(2)
                .map(|f| f.chars().take(80).collect())
                .collect();
            let said = &sentences(language)[0];
            return ScriptedReply::ending_with(&format!("{said}\n{}", facts.join("\n")), EOT);
        }
        let user_turn = prompt
            .rsplit("<|start_header_id|>user<|end_header_id|>")
            .next()
            .unwrap_or("");
        let message: String = user_turn.chars().take(60).collect();
        let results = calls.entry(message).or_default();
        let wanted = if user_turn.contains("big?") {
            3
        } else {
            usize::from(user_turn.contains('?'))
        };
        if *results < wanted {
            *results += 1;
            let word = if user_turn.contains("big?") {
                "big"
            } else {
                "liberté"
            };
            let call = json!({"name": "lookup", "parameters": {"word": word}}).to_string();
            return ScriptedReply::ending_with(&call, EOM);
        }
        ScriptedReply::ending_with("D'accord, c'est noté. Réponse courte.", EOT)
    }
}

/// A conversation's user messages, and the language memory should hold after each.
fn script() -> Vec<(String, Language)> {
    let mut turns = Vec::new();
    let fr = sentences(Language::Fr);
    turns.push((
        "Je m'appelle Ada et le numéro de mon casier est 4711. Retiens-le bien, s'il te plaît."
            .to_owned(),
        Language::Fr,
    ));
    let others = [
        Language::De,
        Language::Hi,
        Language::Th,
        Language::It,
        Language::Pt,
        Language::Es,
        Language::En,
    ];
    let shorts = [
        "ok",
        "merci",
        "`cargo build`",
        "https://example.org/udhr",
        "👍",
        "42?",
    ];
    let mut current = Language::Fr;
    for i in 1..60 {
        let (text, lang) = match i {
            // An explicit request switches at once.
            30 => (
                "Antworte ab jetzt bitte auf Deutsch.".to_owned(),
                Language::De,
            ),
            // Two confident messages in a row in another language switch too.
            50 => (sentences(Language::Es)[0].clone(), current),
            51 => (sentences(Language::Es)[1].clone(), Language::Es),
            _ if i % 5 == 0 => (shorts[i / 5 % shorts.len()].to_owned(), current),
            _ if i % 2 == 1 => {
                // One message in another language does not flip it.
                let other = others[i / 2 % others.len()];
                let other = if other == current {
                    Language::It
                } else {
                    other
                };
                let s = sentences(other);
                (s[i % s.len()].clone(), current)
            }
            _ => {
                let s = if current == Language::Fr {
                    fr.clone()
                } else {
                    sentences(current)
                };
                let q = if i % 4 == 0 { " big?" } else { " ?" };
                (format!("{}{q}", s[i % s.len()]), current)
            }
        };
        current = lang;
        turns.push((text, lang));
    }
    turns
}

fn grapheme_boundaries(text: &str) -> Vec<usize> {
    text.grapheme_indices(true)
        .map(|(i, _)| i)
        .chain([text.len()])
        .collect()
}

#[test]
fn sixty_turns_in_eight_languages_fit_2048_tokens_with_calls_whole_and_the_prefix_pinned() {
    let asked: Asked = Arc::default();
    let mut backend = ScriptedBackend::new([])
        .with_context_tokens(2048)
        .with_sequences(2)
        .with_responder(responder(asked.clone()));
    let format = format();
    let registry = registry();
    let tools = crate::agent::prompt_tools(&registry, None);
    let mut conversation = Conversation::new(Vec::new()).with_tools(tools);
    let settings = MemorySettings::for_window(2048, 128);
    let mut agent = Agent::new(&mut backend, &format, &registry).with_memory(Memory::new(settings));
    let mut events = Vec::new();
    let mut originals: BTreeMap<usize, String> = BTreeMap::new();
    for (n, (text, expected)) in script().into_iter().enumerate() {
        conversation.push(Message::user(text));
        let outcome = agent.run_turn(&mut conversation, &options(), &mut |_| true, &mut |e| {
            events.push(e.clone())
        });
        assert_eq!(
            outcome.stop,
            TurnStop::Answered,
            "turn {n}: {:?}",
            outcome.reason
        );
        let memory = agent.memory().unwrap();
        assert_eq!(memory.language.current, Some(expected), "turn {n}");
        // No call without its result, no result without its call, in what the model sees.
        let view = memory.view(&conversation);
        let mut open: Vec<String> = Vec::new();
        for m in &view.messages {
            match m {
                Message::Assistant { tool_calls, .. } => {
                    assert!(
                        open.is_empty(),
                        "turn {n}: calls {open:?} lost their results"
                    );
                    open = tool_calls.iter().map(|c| c.id.clone().unwrap()).collect();
                }
                Message::Tool { call_id, .. } => {
                    let id = call_id.clone().unwrap();
                    assert!(open.contains(&id), "turn {n}: result {id} has no call");
                    open.retain(|o| *o != id);
                }
                Message::User { .. } => assert!(open.is_empty(), "turn {n}: {open:?}"),
                Message::System { .. } => {}
            }
        }
        for (i, m) in conversation.messages.iter().enumerate() {
            if let Message::Tool {
                content: corral_prompts::ToolOutput::Text(t),
                ..
            } = m
            {
                originals.entry(i).or_insert_with(|| t.clone());
            }
        }
        // Every cut keeps a prefix of the original that ends on a grapheme boundary.
        for (i, cut) in &memory.shortened {
            let original = match &conversation.messages[*i] {
                Message::User { content } => content.clone(),
                _ => originals[i].clone(),
            };
            let kept = cut.split(&format!("\n{CUT_MARKER}")).next().unwrap();
            assert!(
                original.starts_with(kept),
                "turn {n}: cut {i} is not a prefix"
            );
            assert!(
                grapheme_boundaries(&original).contains(&kept.len()),
                "turn {n}: cut {i} splits a grapheme"
            );
        }
    }
    let memory = agent.memory().unwrap().clone();
    drop(agent);

    // The prefix before the language directive is the same in every conversation prompt, and
    // each prompt carries the directive of its time.
    let prompts: Vec<&String> = backend
        .prompts()
        .iter()
        .filter(|p| !p.contains(SUMMARY_REQUEST))
        .collect();
    let first = prompts[0];
    let pinned_end = first
        .find(Language::Fr.directive())
        .expect("the French directive");
    let pinned = &first[..pinned_end];
    assert!(
        pinned.contains("\"name\": \"lookup\""),
        "the tools are pinned"
    );
    for (i, p) in prompts.iter().enumerate() {
        assert!(
            p.starts_with(pinned),
            "prompt {i} changed the pinned prefix"
        );
        let directive = Language::ALL
            .into_iter()
            .find(|l| p[pinned_end..].starts_with(l.directive()));
        assert!(directive.is_some(), "prompt {i} lost the directive");
    }

    let memory_events: Vec<&Event> = events
        .iter()
        .filter(|e| matches!(e, Event::Memory { .. }))
        .collect();
    let evictions = memory_events
        .iter()
        .filter(
            |e| matches!(e, Event::Memory { report, .. } if report.action == MemoryAction::Evicted),
        )
        .count();
    let in_turn = memory_events.len() - evictions;
    let regions: Vec<String> = memory_events
        .iter()
        .filter_map(|e| match e {
            Event::Memory { tokens, .. } => Some(format!(
                "{}/{}/{}/{}",
                tokens.pinned, tokens.summary, tokens.recent, tokens.free
            )),
            _ => None,
        })
        .collect();
    eprintln!(
        "60 turns: {evictions} evictions ({} turns), {in_turn} cuts inside a turn; tokens pinned/summary/recent/free after each: {}",
        memory.evicted_turns,
        regions.join(" ")
    );
    assert!(evictions >= 3, "{evictions} evictions");
    assert!(
        memory.evicted_turns >= 30,
        "{} turns evicted",
        memory.evicted_turns
    );
    // Some turn alone outgrew the window: its results were shortened or its steps folded.
    assert!(
        memory_events.iter().any(
            |e| matches!(e, Event::Memory { report, .. } if report.action != MemoryAction::Evicted)
        ),
        "no cut inside a turn"
    );
    // Every memory event says what it dropped and how the window is shared.
    for e in &memory_events {
        let Event::Memory { report, tokens, .. } = e else {
            unreachable!()
        };
        assert!(!report.dropped.is_empty());
        assert!(report.after < report.before, "{report:?}");
        assert!(
            tokens.pinned > 0
                && tokens.pinned + tokens.summary + tokens.recent + tokens.reserve <= 2048,
            "{tokens:?}"
        );
    }
    // The summary is there, in the conversation's language (Spanish at the end), and kept the
    // user's first facts through every merge.
    assert_eq!(memory.language.current, Some(Language::Es));
    assert_eq!(asked.lock().unwrap().last().map(String::as_str), Some("es"));
    assert_eq!(
        detect(memory.summary.lines().next().unwrap()),
        Some(Language::Es),
        "{}",
        memory.summary
    );
    assert!(
        memory.summary.contains("4711") && memory.summary.contains("Ada"),
        "{}",
        memory.summary
    );
    let asked = asked.lock().unwrap();
    assert!(
        asked.iter().any(|l| l == "fr") && asked.iter().any(|l| l == "de"),
        "{asked:?}"
    );
}

#[test]
fn a_failed_summary_falls_back_to_first_sentences_and_says_so() {
    let mut backend = ScriptedBackend::new([])
        .with_context_tokens(1024)
        .with_sequences(2)
        .with_responder(|prompt: &str| {
            if prompt.contains(SUMMARY_REQUEST) {
                ScriptedReply::ending_with("", EOT)
            } else {
                ScriptedReply::ending_with(&"Une réponse assez longue. ".repeat(6), EOT)
            }
        });
    let format = format();
    let registry = Registry::new();
    let mut conversation = Conversation::new(Vec::new());
    let mut agent = Agent::new(&mut backend, &format, &registry)
        .with_memory(Memory::new(MemorySettings::for_window(1024, 64)));
    let mut reports = Vec::new();
    for i in 0..20 {
        conversation.push(Message::user(format!(
            "Question numéro {i} : que dit l'article premier ? Merci."
        )));
        let outcome = agent.run_turn(&mut conversation, &options(), &mut |_| true, &mut |e| {
            if let Event::Memory { report, .. } = e {
                reports.push(report.clone());
            }
        });
        assert_eq!(outcome.stop, TurnStop::Answered, "{:?}", outcome.reason);
    }
    assert!(!reports.is_empty());
    for r in &reports {
        assert_eq!(r.summary_by, SummaryBy::Fallback);
        assert_eq!(
            r.summary_error.as_deref(),
            Some("the summariser returned nothing")
        );
    }
    let summary = &agent.memory().unwrap().summary;
    assert!(summary.contains("User: Question numéro"), "{summary}");
}

#[test]
fn without_summaries_an_eviction_shifts_the_kept_turns_instead_of_evaluating_them() {
    let mut evaluated_after = BTreeMap::new();
    for shift in [true, false] {
        let mut backend = ScriptedBackend::new([])
            .with_context_tokens(1024)
            .with_responder(|_: &str| {
                ScriptedReply::ending_with("Bien reçu, merci pour ce message.", EOT)
            });
        let format = format();
        let registry = Registry::new();
        let mut conversation = Conversation::new(vec![Message::system("Tu es un assistant.")]);
        let mut settings = MemorySettings::for_window(1024, 64);
        settings.summarise = false;
        settings.shift_in_place = shift;
        let mut agent =
            Agent::new(&mut backend, &format, &registry).with_memory(Memory::new(settings));
        let mut seen = Vec::new();
        for i in 0..30 {
            conversation.push(Message::user(format!(
                "Message {i} : tous les êtres humains naissent libres."
            )));
            let mut shifted = None;
            let outcome = agent.run_turn(&mut conversation, &options(), &mut |_| true, &mut |e| {
                if let Event::Memory {
                    shifted: s, report, ..
                } = e
                {
                    assert_eq!(report.summary_by, SummaryBy::None);
                    shifted = Some(*s);
                }
            });
            assert_eq!(outcome.stop, TurnStop::Answered);
            if let Some(s) = shifted {
                seen.push((s, outcome.prompt_tokens - outcome.reused_tokens));
            }
        }
        assert!(!seen.is_empty());
        assert!(agent.memory().unwrap().summary.is_empty());
        for &(shifted, _) in &seen {
            assert_eq!(shifted > 0, shift, "shifted {shifted}");
        }
        evaluated_after.insert(shift, seen.iter().map(|s| s.1).collect::<Vec<usize>>());
    }
    // Shifted, only the new message is evaluated; otherwise the kept turns are evaluated again.
    let most_shifted = evaluated_after[&true].iter().max().unwrap();
    let least_unshifted = evaluated_after[&false].iter().min().unwrap();
    assert!(most_shifted + 100 < *least_unshifted, "{evaluated_after:?}");
}

#[test]
fn a_message_too_big_for_the_window_is_cut_with_a_marker_never_lost() {
    let mut backend =
        ScriptedBackend::new([ScriptedReply::ending_with("Vu.", EOT)]).with_context_tokens(512);
    let format = format();
    let registry = Registry::new();
    let huge = "नमस्ते दुनिया। ".repeat(200);
    let mut conversation = Conversation::new(vec![Message::user(huge.clone())]);
    let mut agent = Agent::new(&mut backend, &format, &registry)
        .with_memory(Memory::new(MemorySettings::for_window(512, 32)));
    let mut cut = None;
    let outcome = agent.run_turn(&mut conversation, &options(), &mut |_| true, &mut |e| {
        if let Event::Memory { report, .. } = e {
            cut = Some(report.action);
        }
    });
    assert_eq!(outcome.stop, TurnStop::Answered, "{:?}", outcome.reason);
    assert_eq!(cut, Some(MemoryAction::Cut));
    assert_eq!(
        conversation.messages[0],
        Message::user(huge.clone()),
        "the user's text is kept"
    );
    drop(agent);
    let prompt = &backend.prompts()[0];
    assert!(prompt.contains(CUT_MARKER), "{prompt}");
    assert!(prompt.len() < 512 * 4);
}

#[test]
fn compact_folds_every_kept_turn_into_the_summary_and_the_next_turn_starts_from_it() {
    let mut backend = ScriptedBackend::new([])
        .with_context_tokens(4096)
        .with_sequences(2)
        .with_responder(|prompt: &str| {
            if prompt.contains(SUMMARY_REQUEST) {
                ScriptedReply::ending_with("The user asked about apples and pears.", EOT)
            } else {
                ScriptedReply::ending_with("Noted.", EOT)
            }
        });
    let format = format();
    let registry = Registry::new();
    let mut conversation = Conversation::new(vec![Message::system("Be brief.")]);
    let mut agent = Agent::new(&mut backend, &format, &registry)
        .with_memory(Memory::new(MemorySettings::for_window(4096, 256)));
    assert_eq!(
        agent.compact(&conversation).unwrap(),
        None,
        "nothing to fold yet"
    );
    for fruit in ["apples", "pears"] {
        conversation.push(Message::user(format!("Tell me about {fruit}.")));
        agent.run_turn(&mut conversation, &options(), &mut |_| true, &mut |_| {});
    }
    let report = agent
        .compact(&conversation)
        .unwrap()
        .expect("two turns to fold");
    assert_eq!(report.turns, 2);
    assert_eq!(report.summary_by, SummaryBy::Model);
    assert!(report.after < report.before, "{report:?}");
    let memory = agent.memory().unwrap();
    assert_eq!(memory.summary, "The user asked about apples and pears.");
    assert_eq!(memory.first_kept, conversation.messages.len());
    // The model now sees the system prompt and the summary, and none of the folded turns.
    let view = memory.view(&conversation);
    assert!(view
        .messages
        .iter()
        .all(|m| !matches!(m, Message::User { content } if content.contains("apples"))));
    // Nothing the user had is lost.
    assert_eq!(conversation.messages.len(), 5);
}

#[test]
fn a_system_message_added_later_moves_every_index_by_one() {
    let mut memory = Memory::new(MemorySettings::for_window(4096, 256));
    memory.first_kept = 4;
    memory.hidden.insert(5);
    memory.shortened.insert(6, "cut".into());
    memory.system_changed(1);
    assert_eq!(memory.first_kept, 5);
    assert!(memory.hidden.contains(&6));
    assert_eq!(memory.shortened.get(&7).map(String::as_str), Some("cut"));
    memory.system_changed(-1);
    assert_eq!(memory.first_kept, 4);
    // Nothing evicted yet: the first kept message stays "from the start".
    let mut fresh = Memory::new(MemorySettings::for_window(4096, 256));
    fresh.system_changed(1);
    assert_eq!(fresh.first_kept, 0);
}
