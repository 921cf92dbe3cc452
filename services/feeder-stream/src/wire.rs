//! Domain words with a wire name (a quarantine reason, a metric label): declared with
//! [`wire_enum!`](crate::wire_enum), which writes the enum, its name for each variant,
//! the reverse lookup and the list of every variant from one table.
//!
//! Why a table: a hand-kept list of variants beside a hand-kept `match` let a new reason
//! be missing from the list and be counted as "other". Here the list, the names and the
//! lookup cannot disagree, and a `match` on the enum is checked for every variant.

/// `wire_enum! { /// doc
/// pub enum Name (name_fn) { Variant => "wire", ... } }` declares `Name` with
/// `name_fn(self) -> &'static str`, `from_wire(&str) -> Option<Self>` and `ALL`
/// (every variant, in table order).
#[macro_export]
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident ($as_str:ident) {
            $( $(#[$vmeta:meta])* $variant:ident => $wire:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant ),+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: [$name; [$($wire),+].len()] = [$($name::$variant),+];

            /// The wire name.
            pub const fn $as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $wire ),+
                }
            }

            /// The variant of a wire name, if it is one.
            pub fn from_wire(s: &str) -> Option<Self> {
                match s {
                    $( $wire => Some($name::$variant), )+
                    _ => None,
                }
            }
        }
    };
}

#[cfg(test)]
mod tests {
    crate::wire_enum! {
        enum Colour (name) { Red => "red", Dark => "dark_blue" }
    }

    #[test]
    fn names_and_lookup_come_from_one_table() {
        assert_eq!(Colour::ALL, [Colour::Red, Colour::Dark]);
        for c in Colour::ALL {
            assert_eq!(Colour::from_wire(c.name()), Some(c));
        }
        assert_eq!(Colour::from_wire("blue"), None);
    }
}
