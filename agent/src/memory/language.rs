//! Which of Llama 3.1's eight languages a conversation is in.
//!
//! A message's language comes from its script first (Devanagari is Hindi, Thai script is Thai),
//! then, for Latin text, from `whatlang` restricted to the six Latin-script languages. The
//! conversation's language ([`LanguageTracker`]) has hysteresis: short or mixed messages ("ok",
//! "merci", a code snippet, a URL) never flip it; [`SWITCH_AFTER`] confident messages in a row
//! in another language do, and so does an explicit request ("answer in German", `/lang de`).

use serde::{Deserialize, Serialize};
use unicode_segmentation::UnicodeSegmentation;
use whatlang::{Detector, Lang, Script};

/// One of the languages Llama 3.1 speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    /// English.
    En,
    /// French.
    Fr,
    /// German.
    De,
    /// Hindi.
    Hi,
    /// Italian.
    It,
    /// Portuguese.
    Pt,
    /// Spanish.
    Es,
    /// Thai.
    Th,
}

/// Messages with fewer letters than this say too little to tell a language.
pub const MIN_LETTERS: usize = 12;

/// Confident messages in a row in another language that switch the conversation's language.
pub const SWITCH_AFTER: usize = 2;

/// Least `whatlang` confidence for a Latin-script message to count (its confidence compares the
/// best language with the runner-up, so short texts score low even when right).
const MIN_CONFIDENCE: f64 = 0.15;

/// Frequent words that belong to one Latin-script language only (of these six): in short
/// messages they tell Spanish from Portuguese and Italian better than letter trigrams do.
const FUNCTION_WORDS: [(Language, &[&str]); 6] = [
    (
        Language::En,
        &[
            "the", "and", "is", "are", "of", "to", "what", "you", "with", "have", "has", "shall",
            "this", "that", "for", "my", "should", "one", "their",
        ],
    ),
    (
        Language::Fr,
        &[
            "le", "les", "des", "est", "et", "une", "du", "je", "vous", "ils", "sont", "dans",
            "pour", "pas", "au", "aux", "nul", "sera", "tout", "mon",
        ],
    ),
    (
        Language::De,
        &[
            "der", "die", "das", "und", "ist", "ich", "nicht", "sie", "ein", "eine", "mit", "auf",
            "den", "dem", "zu", "sind", "oder", "niemand", "jeder", "wie",
        ],
    ),
    (
        Language::It,
        &[
            "il", "gli", "della", "di", "è", "ed", "sono", "per", "nel", "alla", "degli", "essere",
            "ogni", "che", "non", "nessun", "potrà", "delle",
        ],
    ),
    (
        Language::Pt,
        &[
            "os", "do", "da", "dos", "das", "não", "em", "um", "uma", "ninguém", "nem", "ao",
            "são", "você", "muito", "todo", "pessoal",
        ],
    ),
    (
        Language::Es,
        &[
            "el", "los", "del", "y", "nadie", "está", "están", "su", "sus", "al", "como", "pero",
            "muy", "hay", "ni", "todo", "tiene",
        ],
    ),
];

/// The Latin-script language whose function words `text` uses most, when at least two and
/// more than any other's.
fn by_function_words(text: &str) -> Option<Language> {
    let lower = text.to_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    let mut scores: Vec<(usize, Language)> = FUNCTION_WORDS
        .iter()
        .map(|(lang, list)| (words.iter().filter(|w| list.contains(w)).count(), *lang))
        .collect();
    scores.sort_by_key(|s| std::cmp::Reverse(s.0));
    (scores[0].0 >= 2 && scores[0].0 > scores[1].0).then_some(scores[0].1)
}

impl Language {
    /// All eight, in Llama 3.1's order.
    pub const ALL: [Language; 8] = [
        Language::En,
        Language::Fr,
        Language::De,
        Language::Hi,
        Language::It,
        Language::Pt,
        Language::Es,
        Language::Th,
    ];

    /// The ISO 639-1 code (`de`).
    pub fn code(self) -> &'static str {
        match self {
            Language::En => "en",
            Language::Fr => "fr",
            Language::De => "de",
            Language::Hi => "hi",
            Language::It => "it",
            Language::Pt => "pt",
            Language::Es => "es",
            Language::Th => "th",
        }
    }

    /// The language from its code, its English name or its own name (`de`, `german`,
    /// `Deutsch`), any case.
    pub fn parse(name: &str) -> Option<Language> {
        let name = name.trim().to_lowercase();
        Language::ALL
            .into_iter()
            .find(|l| l.code() == name || l.names().contains(&name.as_str()))
    }

    /// The English name (`German`).
    pub fn english_name(self) -> &'static str {
        match self {
            Language::En => "English",
            Language::Fr => "French",
            Language::De => "German",
            Language::Hi => "Hindi",
            Language::It => "Italian",
            Language::Pt => "Portuguese",
            Language::Es => "Spanish",
            Language::Th => "Thai",
        }
    }

    /// Lowercase names people use for it, in English and in the language itself.
    fn names(self) -> &'static [&'static str] {
        match self {
            Language::En => &[
                "english", "anglais", "englisch", "inglés", "inglese", "inglês",
            ],
            Language::Fr => &[
                "french",
                "français",
                "francais",
                "französisch",
                "francés",
                "francese",
                "francês",
            ],
            Language::De => &[
                "german", "deutsch", "allemand", "alemán", "tedesco", "alemão",
            ],
            Language::Hi => &["hindi", "हिंदी", "हिन्दी"],
            Language::It => &["italian", "italiano", "italien", "italienisch"],
            Language::Pt => &[
                "portuguese",
                "português",
                "portugues",
                "portugais",
                "portugiesisch",
                "portugués",
                "portoghese",
            ],
            Language::Es => &[
                "spanish", "español", "espanol", "espagnol", "spanisch", "spagnolo", "espanhol",
            ],
            Language::Th => &["thai", "ไทย", "ภาษาไทย"],
        }
    }

    /// What the model is told, in the language itself, so it answers in it.
    pub fn directive(self) -> &'static str {
        match self {
            Language::En => "Always answer in English.",
            Language::Fr => "Réponds toujours en français.",
            Language::De => "Antworte immer auf Deutsch.",
            Language::Hi => "हमेशा हिंदी में उत्तर दें।",
            Language::It => "Rispondi sempre in italiano.",
            Language::Pt => "Responda sempre em português.",
            Language::Es => "Responde siempre en español.",
            Language::Th => "ตอบเป็นภาษาไทยเสมอ",
        }
    }

    fn from_whatlang(lang: Lang) -> Option<Language> {
        Some(match lang {
            Lang::Eng => Language::En,
            Lang::Fra => Language::Fr,
            Lang::Deu => Language::De,
            Lang::Hin => Language::Hi,
            Lang::Ita => Language::It,
            Lang::Por => Language::Pt,
            Lang::Spa => Language::Es,
            Lang::Tha => Language::Th,
            _ => return None,
        })
    }
}

impl std::fmt::Display for Language {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

/// The text of `message` a detector should see: URLs, inline and fenced code removed.
fn prose(message: &str) -> String {
    let mut out = String::new();
    for (i, block) in message.split("```").enumerate() {
        if i % 2 == 1 {
            continue; // inside a fence
        }
        for (j, span) in block.split('`').enumerate() {
            if j % 2 == 1 {
                continue; // inline code
            }
            for word in span.split_whitespace() {
                let url = word.contains("://") || word.starts_with("www.");
                let code = word.chars().any(|c| "{}[]();=<>_/\\|$#".contains(c));
                if !url && !code {
                    out.push_str(word);
                    out.push(' ');
                }
            }
        }
    }
    out
}

/// The language of one message, when it is confidently one of the eight: script first, then
/// the detector for Latin text; `None` for short, mixed or other text.
pub fn detect(message: &str) -> Option<Language> {
    let text = prose(message);
    let letters = text
        .graphemes(true)
        .filter(|g| g.chars().any(char::is_alphabetic));
    if letters.count() < MIN_LETTERS {
        return None;
    }
    match whatlang::detect_script(&text)? {
        Script::Devanagari => Some(Language::Hi),
        Script::Thai => Some(Language::Th),
        Script::Latin => {
            if let Some(lang) = by_function_words(&text) {
                return Some(lang);
            }
            let detector = Detector::with_allowlist(vec![
                Lang::Eng,
                Lang::Fra,
                Lang::Deu,
                Lang::Ita,
                Lang::Por,
                Lang::Spa,
            ]);
            let info = detector.detect(&text)?;
            (info.is_reliable() || info.confidence() >= MIN_CONFIDENCE)
                .then(|| Language::from_whatlang(info.lang()))
                .flatten()
        }
        _ => None,
    }
}

/// Verbs (and Hindi/Thai phrases) that ask for a language, lowercase.
const ASKING: &[&str] = &[
    "answer",
    "respond",
    "reply",
    "speak",
    "switch",
    "talk",
    "réponds",
    "répondez",
    "parle",
    "parlez",
    "antworte",
    "antworten",
    "sprich",
    "sprechen",
    "responde",
    "contesta",
    "habla",
    "rispondi",
    "parla",
    "responda",
    "fale",
    "जवाब",
    "उत्तर",
    "बोलो",
    "बोलिए",
    "ตอบ",
    "พูด",
];

/// The language `message` explicitly asks for ("answer in German", "antworte auf Deutsch",
/// "हिंदी में जवाब दो"): a short message naming a language and a verb of answering.
pub fn requested(message: &str) -> Option<Language> {
    if message.graphemes(true).count() > 80 {
        return None;
    }
    let lower = message.to_lowercase();
    if !ASKING.iter().any(|verb| lower.contains(verb)) {
        return None;
    }
    let words: Vec<&str> = lower
        .split(|c: char| !(c.is_alphanumeric() || is_mark(c)))
        .filter(|w| !w.is_empty())
        .collect();
    Language::ALL.into_iter().find(|l| {
        l.names().iter().any(|name| {
            // Thai is written without spaces: its names are matched anywhere.
            words.contains(name) || (*l == Language::Th && lower.contains(name))
        })
    })
}

/// Combining marks are part of Devanagari and Thai words.
fn is_mark(c: char) -> bool {
    matches!(c, '\u{0900}'..='\u{097F}' | '\u{0E00}'..='\u{0E7F}')
}

/// The conversation's language, kept steady through short and mixed messages.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LanguageTracker {
    /// The language the conversation is in (`None` until a message tells).
    pub current: Option<Language>,
    /// Set by an explicit choice (`/lang de`): detection no longer changes it.
    #[serde(default)]
    pub fixed: bool,
    /// Another language seen in the last messages, and how many times in a row.
    #[serde(default)]
    pending: Option<(Language, usize)>,
}

/// How a message changed the conversation's language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LanguageChange {
    /// It stays as it was.
    Kept,
    /// The first message that told it.
    Detected(Language),
    /// Switched, by request or after several messages in it.
    Switched {
        /// Before.
        from: Language,
        /// Now.
        to: Language,
    },
}

impl LanguageTracker {
    /// Follows one user message.
    pub fn observe(&mut self, message: &str) -> LanguageChange {
        if let Some(asked) = requested(message) {
            return self.set(asked, false);
        }
        if self.fixed {
            return LanguageChange::Kept;
        }
        let Some(seen) = detect(message) else {
            return LanguageChange::Kept;
        };
        match self.current {
            None => self.set(seen, false),
            Some(current) if current == seen => {
                self.pending = None;
                LanguageChange::Kept
            }
            Some(_) => {
                let count = match self.pending {
                    Some((lang, n)) if lang == seen => n + 1,
                    _ => 1,
                };
                if count >= SWITCH_AFTER {
                    self.set(seen, false)
                } else {
                    self.pending = Some((seen, count));
                    LanguageChange::Kept
                }
            }
        }
    }

    /// Sets the language; `fixed` stops detection from changing it (`/lang de`).
    pub fn set(&mut self, language: Language, fixed: bool) -> LanguageChange {
        self.pending = None;
        self.fixed = fixed;
        let before = self.current.replace(language);
        match before {
            None => LanguageChange::Detected(language),
            Some(from) if from == language => LanguageChange::Kept,
            Some(from) => LanguageChange::Switched { from, to: language },
        }
    }

    /// Back to detection (`/lang auto`), keeping the current language until messages change it.
    pub fn unfix(&mut self) {
        self.fixed = false;
        self.pending = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::samples::UDHR;

    #[test]
    fn every_language_of_the_declaration_is_detected() {
        for (lang, text) in UDHR {
            for sentence in text.split_inclusive(['.', '।']) {
                if sentence.trim().graphemes(true).count() >= 40 {
                    assert_eq!(detect(sentence), Some(*lang), "{sentence}");
                }
            }
        }
    }

    #[test]
    fn short_code_and_url_messages_tell_nothing() {
        for text in [
            "ok",
            "merci",
            "danke!",
            "`let x = 1;`",
            "https://example.com/a/b/c/d/e",
            "```\nfn main() { println!(\"hi\"); }\n```",
            "42 + 17 = ?",
        ] {
            assert_eq!(detect(text), None, "{text}");
        }
    }

    #[test]
    fn requests_name_the_language_in_any_of_the_eight() {
        let cases = [
            ("answer in German please", Language::De),
            ("Réponds en français", Language::Fr),
            ("antworte auf Deutsch", Language::De),
            ("Responde en español", Language::Es),
            ("rispondi in italiano", Language::It),
            ("Responda em português", Language::Pt),
            ("हिंदी में जवाब दो", Language::Hi),
            ("ตอบเป็นภาษาไทย", Language::Th),
            ("/ switch to english", Language::En),
        ];
        for (text, lang) in cases {
            assert_eq!(requested(text), Some(lang), "{text}");
        }
        assert_eq!(
            requested("I was in Germany last week, what is the weather?"),
            None
        );
        assert_eq!(requested("Tell me about German history"), None);
    }

    #[test]
    fn the_conversation_language_needs_several_messages_or_a_request_to_change() {
        let mut tracker = LanguageTracker::default();
        let fr = "Bonjour, je voudrais savoir quel temps il fera demain à Paris.";
        let de = "Guten Tag, ich möchte wissen, wie das Wetter morgen in Berlin wird.";
        let de2 = "Und wie wird das Wetter am Wochenende in München sein?";
        assert_eq!(tracker.observe(fr), LanguageChange::Detected(Language::Fr));
        for short in ["ok", "merci", "`cargo build`", "https://meteo.fr"] {
            assert_eq!(tracker.observe(short), LanguageChange::Kept);
        }
        assert_eq!(tracker.observe(de), LanguageChange::Kept);
        assert_eq!(
            tracker.observe(fr),
            LanguageChange::Kept,
            "a French message resets"
        );
        assert_eq!(tracker.observe(de), LanguageChange::Kept);
        assert_eq!(
            tracker.observe(de2),
            LanguageChange::Switched {
                from: Language::Fr,
                to: Language::De
            }
        );
        assert_eq!(
            tracker.observe("answer in Spanish"),
            LanguageChange::Switched {
                from: Language::De,
                to: Language::Es
            }
        );
        tracker.set(Language::Th, true);
        assert_eq!(tracker.observe(de), LanguageChange::Kept);
        assert_eq!(tracker.observe(de2), LanguageChange::Kept);
        assert_eq!(tracker.current, Some(Language::Th));
    }
}
