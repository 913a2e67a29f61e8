//! A small JSON writer for HAR entries: objects and arrays written straight into the
//! line's buffer, with no `serde_json::Value` tree between the record and the bytes
//! (building one cost more than everything else a saved flow costs). Strings and
//! numbers go through `serde_json`'s own formatting, so the bytes are what
//! `serde_json` would write; an object's keys are written in the order given, which
//! the callers keep sorted (as `serde_json::Map` sorts them), checked in debug builds.

/// The buffer a value is written into.
pub(super) struct Json<'a> {
    out: &'a mut Vec<u8>,
}

impl<'a> Json<'a> {
    pub(super) fn new(out: &'a mut Vec<u8>) -> Self {
        Json { out }
    }

    /// Writes `value` as a JSON string.
    pub(super) fn str(&mut self, value: &str) {
        // Writing into a `Vec` cannot fail, and a `str` always serializes.
        let _ = serde_json::to_writer(&mut *self.out, value);
    }

    /// Writes a number (`null` for a NaN or an infinity, as `serde_json::Value` does).
    pub(super) fn f64(&mut self, value: f64) {
        if value.is_finite() {
            let _ = serde_json::to_writer(&mut *self.out, &value);
        } else {
            self.out.extend_from_slice(b"null");
        }
    }

    pub(super) fn i64(&mut self, value: i64) {
        let _ = serde_json::to_writer(&mut *self.out, &value);
    }

    pub(super) fn u64(&mut self, value: u64) {
        let _ = serde_json::to_writer(&mut *self.out, &value);
    }

    pub(super) fn bool(&mut self, value: bool) {
        self.out
            .extend_from_slice(if value { b"true" } else { b"false" });
    }

    pub(super) fn null(&mut self) {
        self.out.extend_from_slice(b"null");
    }

    /// Writes an object whose fields `fields` writes.
    pub(super) fn object(&mut self, fields: impl FnOnce(&mut Object<'_>)) {
        self.out.push(b'{');
        let mut object = Object {
            json: Json {
                out: &mut *self.out,
            },
            first: true,
            #[cfg(debug_assertions)]
            last: None,
        };
        fields(&mut object);
        self.out.push(b'}');
    }

    /// Writes an array whose items `items` writes.
    pub(super) fn array(&mut self, items: impl FnOnce(&mut Array<'_>)) {
        self.out.push(b'[');
        let mut array = Array {
            json: Json {
                out: &mut *self.out,
            },
            first: true,
        };
        items(&mut array);
        self.out.push(b']');
    }

    /// An array of strings.
    pub(super) fn strs<'s>(&mut self, items: impl IntoIterator<Item = &'s str>) {
        self.array(|a| {
            for item in items {
                a.item().str(item);
            }
        });
    }
}

/// The fields of an object being written.
pub(super) struct Object<'o> {
    json: Json<'o>,
    first: bool,
    #[cfg(debug_assertions)]
    last: Option<&'static str>,
}

impl<'o> Object<'o> {
    /// Starts the field `key`; write its value into what this returns. Keys come in
    /// byte order.
    pub(super) fn key(&mut self, key: &'static str) -> &mut Json<'o> {
        #[cfg(debug_assertions)]
        {
            if let Some(last) = self.last {
                debug_assert!(last < key, "HAR keys out of order: {last:?} before {key:?}");
            }
            self.last = Some(key);
        }
        if !self.first {
            self.json.out.push(b',');
        }
        self.first = false;
        self.json.str(key);
        self.json.out.push(b':');
        &mut self.json
    }

    pub(super) fn str(&mut self, key: &'static str, value: &str) {
        self.key(key).str(value);
    }

    pub(super) fn f64(&mut self, key: &'static str, value: f64) {
        self.key(key).f64(value);
    }

    pub(super) fn opt_f64(&mut self, key: &'static str, value: Option<f64>) {
        match value {
            Some(v) => self.key(key).f64(v),
            None => self.key(key).null(),
        }
    }

    pub(super) fn opt_str(&mut self, key: &'static str, value: Option<&str>) {
        match value {
            Some(v) => self.key(key).str(v),
            None => self.key(key).null(),
        }
    }

    pub(super) fn i64(&mut self, key: &'static str, value: i64) {
        self.key(key).i64(value);
    }

    pub(super) fn u64(&mut self, key: &'static str, value: u64) {
        self.key(key).u64(value);
    }

    pub(super) fn bool(&mut self, key: &'static str, value: bool) {
        self.key(key).bool(value);
    }
}

/// The items of an array being written.
pub(super) struct Array<'o> {
    json: Json<'o>,
    first: bool,
}

impl<'o> Array<'o> {
    /// Starts the next item; write it into what this returns.
    pub(super) fn item(&mut self) -> &mut Json<'o> {
        if !self.first {
            self.json.out.push(b',');
        }
        self.first = false;
        &mut self.json
    }
}
