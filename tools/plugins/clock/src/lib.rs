//! corral builtin `clock`: the current date and time in an IANA time zone. The time zone
//! database is compiled in, so the plugin needs no files and no environment.

use chrono::{Datelike, Utc};
use chrono_tz::Tz;
use corral_sdk::{json, Output, Plugin, Tool, Value};

struct Clock;

impl Plugin for Clock {
    fn tools() -> Vec<Tool> {
        vec![Tool::new(
            "clock",
            "Returns the current date and time in an IANA time zone such as Europe/Paris or \
             America/New_York (default UTC), with the weekday and the UTC offset.",
            json!({
                "type": "object",
                "properties": {
                    "timezone": {"type": "string", "description": "IANA zone name, e.g. Asia/Tokyo", "maxLength": 64}
                },
                "additionalProperties": false
            }),
        )]
    }

    fn call(_tool: &str, args: Value) -> Result<Output, String> {
        let name = args["timezone"].as_str().unwrap_or("UTC");
        let tz: Tz = name.parse().map_err(|_| {
            format!("unknown time zone `{name}`: use an IANA name such as Europe/Paris, America/New_York or UTC")
        })?;
        let now = Utc::now().with_timezone(&tz);
        Ok(Output::json(json!({
            "timezone": tz.name(),
            "datetime": now.to_rfc3339(),
            "date": now.format("%Y-%m-%d").to_string(),
            "time": now.format("%H:%M:%S").to_string(),
            "weekday": now.weekday().to_string(),
            "utc_offset": now.format("%:z").to_string(),
            "abbreviation": now.format("%Z").to_string(),
        })))
    }
}

corral_sdk::export_plugin!(Clock);
