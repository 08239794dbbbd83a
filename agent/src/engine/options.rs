//! Options for loading a model into an engine, shared by every backend build.

use std::str::FromStr;

/// The largest context corral accepts (Llama 3.1's 128K window).
pub const MAX_CONTEXT_TOKENS: u32 = 131_072;

/// Element type of the KV cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KvType {
    /// 16-bit floats (llama.cpp's default).
    #[default]
    F16,
    /// 8-bit blocks: half the memory, needs flash attention for the V cache.
    Q8_0,
}

impl KvType {
    /// Bytes per cached element (per key or value scalar).
    pub fn bytes_per_element(self) -> f64 {
        match self {
            KvType::F16 => 2.0,
            KvType::Q8_0 => 34.0 / 32.0,
        }
    }
}

impl FromStr for KvType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "f16" => Ok(KvType::F16),
            "q8_0" => Ok(KvType::Q8_0),
            other => Err(format!("unknown KV cache type `{other}`: use f16 or q8_0")),
        }
    }
}

/// Whether llama.cpp uses flash attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FlashAttention {
    /// llama.cpp decides per device (its default).
    #[default]
    Auto,
    /// Always on.
    On,
    /// Always off.
    Off,
}

impl FromStr for FlashAttention {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(FlashAttention::Auto),
            "on" | "true" | "1" => Ok(FlashAttention::On),
            "off" | "false" | "0" => Ok(FlashAttention::Off),
            other => Err(format!(
                "unknown flash-attention mode `{other}`: use on, off or auto"
            )),
        }
    }
}

/// How to load a model and size its context.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineOptions {
    /// Context window in tokens (`None`: the model's training context, capped so the KV cache
    /// fits in memory).
    pub context_tokens: Option<u32>,
    /// CPU threads for generation and prompt evaluation.
    pub threads: u32,
    /// Logical batch size for prompt evaluation.
    pub batch: u32,
    /// KV cache element type.
    pub kv_type: KvType,
    /// Flash attention mode.
    pub flash_attention: FlashAttention,
    /// Layers to offload to the GPU (needs the `cuda` feature).
    pub gpu_layers: u32,
    /// Show llama.cpp's own log on stderr.
    pub verbose: bool,
    /// Show a progress bar while loading.
    pub show_progress: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            context_tokens: None,
            threads: default_threads(),
            batch: 512,
            kv_type: KvType::F16,
            flash_attention: FlashAttention::Auto,
            gpu_layers: 0,
            verbose: false,
            show_progress: false,
        }
    }
}

impl EngineOptions {
    /// Checks option combinations llama.cpp would reject with a less helpful message.
    ///
    /// # Errors
    /// A description of the conflict and how to resolve it.
    pub fn validate(&self) -> Result<(), String> {
        if self.kv_type == KvType::Q8_0 && self.flash_attention == FlashAttention::Off {
            return Err("--kv-type q8_0 needs flash attention: drop `--flash-attn off`".into());
        }
        if self.batch == 0 {
            return Err("--batch must be at least 1".into());
        }
        if self.threads == 0 {
            return Err("--threads must be at least 1".into());
        }
        Ok(())
    }
}

/// Threads to use when the user does not say: every core the process may use.
pub fn default_threads() -> u32 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(4)
}

/// Bytes of memory the system reports as available (Linux `MemAvailable`), if known.
pub fn available_memory_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    meminfo.lines().find_map(|line| {
        let rest = line.strip_prefix("MemAvailable:")?;
        let kib: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kib * 1024)
    })
}

/// Chooses the context size: the user's, checked against the model, or the model's trained
/// context capped so the KV cache takes at most half of the available memory.
///
/// # Errors
/// When the requested size exceeds what the model supports or corral's maximum.
pub fn choose_context(
    requested: Option<u32>,
    trained: u32,
    kv_bytes_per_token: f64,
    available_memory: Option<u64>,
) -> Result<u32, String> {
    let supported = trained.clamp(1, MAX_CONTEXT_TOKENS);
    if let Some(ctx) = requested {
        if ctx == 0 {
            return Err("--ctx must be at least 1 token".into());
        }
        if ctx > supported {
            return Err(format!(
                "--ctx {ctx} is larger than this model supports ({supported} tokens, its training \
                 context{}): use --ctx {supported} or less",
                if trained > MAX_CONTEXT_TOKENS {
                    " capped at 131072"
                } else {
                    ""
                }
            ));
        }
        return Ok(ctx);
    }
    let Some(available) = available_memory else {
        return Ok(supported);
    };
    let fits = (available as f64 / 2.0 / kv_bytes_per_token.max(1.0)) as u64;
    let fits = fits.clamp(512, u64::from(supported)) as u32;
    // Round down to a multiple of 256 so the cache uses whole blocks.
    Ok(if fits >= 256 { fits / 256 * 256 } else { fits }.min(supported))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requested_context_over_training_context_is_refused_with_the_limit() {
        let err = choose_context(Some(16_384), 8_192, 1000.0, None).unwrap_err();
        assert!(err.contains("8192"), "{err}");
        assert!(err.contains("--ctx 16384"), "{err}");
    }

    #[test]
    fn requested_context_within_limits_is_kept() {
        assert_eq!(choose_context(Some(2048), 8192, 1.0, Some(1)), Ok(2048));
    }

    #[test]
    fn default_context_is_training_context_when_memory_allows() {
        assert_eq!(
            choose_context(None, 8192, 23_040.0, Some(16 << 30)),
            Ok(8192)
        );
    }

    #[test]
    fn default_context_is_capped_by_memory() {
        // 128K trained, 131072 bytes per token, 4 GiB free: half is 2 GiB = 16384 tokens.
        assert_eq!(
            choose_context(None, 131_072, 131_072.0, Some(4 << 30)),
            Ok(16_384)
        );
    }

    #[test]
    fn context_beyond_corral_maximum_is_refused() {
        let err = choose_context(Some(200_000), 1_000_000, 1.0, None).unwrap_err();
        assert!(err.contains("131072"), "{err}");
    }

    #[test]
    fn kv_type_parses_and_names_bad_values() {
        assert_eq!("q8_0".parse::<KvType>(), Ok(KvType::Q8_0));
        assert!("q4".parse::<KvType>().unwrap_err().contains("f16 or q8_0"));
    }
}
