//! The text tables every benchmark prints: columns with a header, a width and an alignment.
//!
//! A column's width is a minimum: a longer cell widens its line (and only its line), as
//! `format!("{:<13}")` does. Columns are one space apart unless [`Table::gap`] says otherwise;
//! a gap before the first column indents the table. A left-aligned last column is not padded,
//! so that no line ends in spaces. [`Table::markdown`] draws the same columns as a Markdown table
//! (`| a | b |`, a rule of dashes under the header).
//!
//! ```
//! use autoloc_bench::table::Table;
//!
//! let mut t = Table::new().left("op", 5).right("p50_ns", 8).gap(2).left("note", 0);
//! t.row(&[&"get", &850, &"shm"]);
//! t.text("      a line of its own");
//! assert_eq!(
//!     t.to_string(),
//!     "op      p50_ns  note\nget        850  shm\n      a line of its own\n"
//! );
//! ```

use std::fmt::{self, Display, Write as _};

/// Which side of its column a cell keeps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Padded on the right.
    Left,
    /// Padded on the left (numbers).
    Right,
}

#[derive(Debug, Clone)]
struct Column {
    header: String,
    width: usize,
    align: Align,
    /// Spaces before it.
    gap: usize,
}

#[derive(Debug, Clone)]
enum Line {
    Row(Vec<String>),
    Text(String),
}

/// A table: its columns, then its rows (and lines of their own between them), printed by
/// `Display`.
#[derive(Debug, Clone, Default)]
pub struct Table {
    columns: Vec<Column>,
    lines: Vec<Line>,
    markdown: bool,
    /// The gap before the next column added, if [`Table::gap`] set one.
    next_gap: Option<usize>,
}

impl Table {
    /// A plain table, columns one space apart.
    pub fn new() -> Table {
        Table::default()
    }

    /// A Markdown table: `| ` before the first column, ` | ` between columns, ` |` after the
    /// last, and a rule of dashes under the header. Gaps do not apply.
    pub fn markdown() -> Table {
        Table {
            markdown: true,
            ..Table::default()
        }
    }

    /// Adds a left-aligned column of at least `width` characters.
    pub fn left(self, header: impl Into<String>, width: usize) -> Table {
        self.column(header.into(), width, Align::Left)
    }

    /// Adds a right-aligned column of at least `width` characters.
    pub fn right(self, header: impl Into<String>, width: usize) -> Table {
        self.column(header.into(), width, Align::Right)
    }

    /// Puts `spaces` spaces (instead of one) before the next column added; before the first, an
    /// indent.
    pub fn gap(mut self, spaces: usize) -> Table {
        self.next_gap = Some(spaces);
        self
    }

    fn column(mut self, header: String, width: usize, align: Align) -> Table {
        let gap = self
            .next_gap
            .take()
            .unwrap_or(usize::from(!self.columns.is_empty()));
        self.columns.push(Column {
            header,
            width,
            align,
            gap,
        });
        self
    }

    /// Adds a row, a cell per column (as each cell's `Display` writes it; format numbers to
    /// their precision first).
    pub fn row(&mut self, cells: &[&dyn Display]) {
        debug_assert_eq!(cells.len(), self.columns.len(), "a cell per column");
        self.lines
            .push(Line::Row(cells.iter().map(ToString::to_string).collect()));
    }

    /// Adds a line of its own after the rows so far, printed as it is.
    pub fn text(&mut self, line: impl Into<String>) {
        self.lines.push(Line::Text(line.into()));
    }

    fn write_row<'a>(
        &self,
        out: &mut fmt::Formatter<'_>,
        cells: impl Iterator<Item = &'a str>,
    ) -> fmt::Result {
        let last = self.columns.len().saturating_sub(1);
        for (i, (c, cell)) in self.columns.iter().zip(cells).enumerate() {
            let width = c.width;
            if self.markdown {
                out.write_str(if i == 0 { "| " } else { " | " })?;
            } else {
                write!(out, "{:1$}", "", c.gap)?;
            }
            match c.align {
                Align::Left if i == last && !self.markdown => out.write_str(cell)?,
                Align::Left => write!(out, "{cell:<width$}")?,
                Align::Right => write!(out, "{cell:>width$}")?,
            }
        }
        if self.markdown {
            out.write_str(" |")?;
        }
        out.write_char('\n')
    }
}

impl Display for Table {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_row(out, self.columns.iter().map(|c| c.header.as_str()))?;
        if self.markdown {
            for c in &self.columns {
                write!(out, "|{:-<1$}", "", c.width + 2)?;
            }
            out.write_str("|\n")?;
        }
        for line in &self.lines {
            match line {
                Line::Row(cells) => self.write_row(out, cells.iter().map(String::as_str))?,
                Line::Text(text) => writeln!(out, "{text}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_columns_pad_to_their_width_and_overflow_alone() {
        let mut t = Table::new().left("transport", 13).right("p50_ns", 8);
        t.row(&[&"shm", &850]);
        t.row(&[&"a-very-long-transport", &12]);
        assert_eq!(
            t.to_string(),
            "transport       p50_ns\n\
             shm                850\n\
             a-very-long-transport       12\n"
        );
    }

    #[test]
    fn gaps_indents_and_an_unpadded_last_column() {
        let mut t = Table::new()
            .gap(2)
            .left("policy", 8)
            .right("n", 3)
            .gap(2)
            .left("shares", 10);
        t.row(&[&"storage", &1, &"khop=1.00"]);
        t.row(&[&"compute", &2, &""]);
        assert_eq!(
            t.to_string(),
            "  policy     n  shares\n  storage    1  khop=1.00\n  compute    2  \n"
        );
    }

    #[test]
    fn markdown_has_bars_and_a_rule() {
        let mut t = Table::markdown().left("command", 7).right("ops/s", 6);
        t.row(&[&"batch", &format!("{:.0}", 1234.4)]);
        assert_eq!(
            t.to_string(),
            "| command |  ops/s |\n|---------|--------|\n| batch   |   1234 |\n"
        );
    }

    #[test]
    fn an_empty_table_is_its_header() {
        let t = Table::new().left("a", 2).right("b", 2);
        assert_eq!(t.to_string(), "a   b\n");
    }
}
