"""An evaluation as a sortable table: one row per gallery column (run), one column per metric.

A cell shows the score; its tooltip the number of images it came from and the metric's meaning.
Small samples (FID and IS on a few dozen images) carry a ⚠ with the warning in the tooltip; a
metric that could not be computed says "not available" with the reason in the tooltip. The
recommended column is starred and tinted, and the best value of every metric is bold.
"""

from __future__ import annotations

import html

from PySide6.QtCore import Qt
from PySide6.QtGui import QBrush, QColor, QFont
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem

from engine.protocol.gallery import METRICS

BEST_TINT = QColor(46, 160, 67, 60)
UNAVAILABLE = "not available"
WARNING_MARK = "⚠"
BEST_MARK = "★"


def metric_meta(evaluation: dict) -> list[dict]:
    """The metrics in table order: the evaluation's own list, else the names its rows use."""
    listed = [m for m in evaluation.get("metrics") or [] if isinstance(m, dict) and m.get("name")]
    if listed:
        return [{**METRICS.get(m["name"], {}), **m} for m in listed]
    names = []
    for row in evaluation.get("rows", []):
        names += [n for n in row.get("scores", {}) if n not in names]
    order = list(METRICS)
    names.sort(key=lambda n: order.index(n) if n in order else len(order))
    return [{"name": n, "title": n, "higher_is_better": True, **METRICS.get(n, {})} for n in names]


def format_value(value: float) -> str:
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:.1f}"
    if magnitude >= 10:
        return f"{value:.2f}"
    return f"{value:.3f}"


def direction(meta: dict) -> str:
    return "↑" if meta.get("higher_is_better", True) else "↓"


class ScoreItem(QTableWidgetItem):
    """Sorts by its number; cells without one stay at the bottom in either order."""

    def __init__(self, text: str, key):
        super().__init__(text)
        self.key = key

    def __lt__(self, other) -> bool:
        mine, theirs = self.key, getattr(other, "key", None)
        if mine is None or theirs is None:
            table = self.tableWidget()
            ascending = table is None or table.horizontalHeader().sortIndicatorOrder() == Qt.AscendingOrder
            return (mine is not None and theirs is None) == ascending
        return mine < theirs


class EvaluationTable(QTableWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.evaluation: dict | None = None
        self.metrics: list[dict] = []
        self.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.setAlternatingRowColors(True)
        self.verticalHeader().setVisible(False)
        self.setWordWrap(False)
        header = self.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeToContents)
        header.setStretchLastSection(False)
        header.setSortIndicatorShown(True)
        header.setMinimumSectionSize(70)

    def set_evaluation(self, evaluation: dict | None) -> None:
        self.setSortingEnabled(False)
        self.clear()
        self.evaluation = evaluation
        rows = (evaluation or {}).get("rows", [])
        # the metrics with a number first: a column of "not available" says less than one with scores
        self.metrics = sorted(metric_meta(evaluation) if evaluation else [], key=lambda m: not has_values(m, rows))
        self.setColumnCount(1 + len(self.metrics))
        self.setRowCount(len(rows))
        headers = ["Run"] + [f"{m.get('title', m['name'])} {direction(m)}" for m in self.metrics]
        self.setHorizontalHeaderLabels(headers)
        for c, meta in enumerate(self.metrics, start=1):
            item = self.horizontalHeaderItem(c)
            better = "higher is better" if meta.get("higher_is_better", True) else "lower is better"
            tip = f"{meta.get('title', meta['name'])}: {meta.get('note', '')} ({better})"
            if meta.get("model"):
                tip += f"\nFeature model: {meta['model']}"
            item.setToolTip(tip)
        self.horizontalHeaderItem(0).setToolTip("The gallery's columns: the base model, runs, checkpoints")
        best_key = ((evaluation or {}).get("best") or {}).get("column")
        best_values = self._best_values(rows)
        bold = QFont(self.font())
        bold.setBold(True)
        for r, row in enumerate(rows):
            is_best = row.get("column") == best_key
            text = row.get("label") or row.get("column", "")
            name_item = ScoreItem((f"{BEST_MARK} " if is_best else "") + text, text.lower())
            name_item.setData(Qt.UserRole, row.get("column"))
            name_item.setToolTip(f"column {row.get('column')}" + ("\nRecommended: "
                                 + str(((evaluation or {}).get("best") or {}).get("reason", "")) if is_best else ""))
            self.setItem(r, 0, name_item)
            for c, meta in enumerate(self.metrics, start=1):
                item = self._score_item(meta, (row.get("scores") or {}).get(meta["name"]))
                if item.key is not None and best_values.get(meta["name"]) == item.key:
                    item.setFont(bold)
                self.setItem(r, c, item)
            if is_best:
                for c in range(self.columnCount()):
                    self.item(r, c).setBackground(QBrush(BEST_TINT))
        self.horizontalHeader().setSortIndicator(-1, Qt.AscendingOrder)
        self.setSortingEnabled(True)
        self.resizeColumnsToContents()
        self._fit_height()

    def _fit_height(self) -> None:
        """No taller than its rows (the notes follow right below); a long table scrolls."""
        rows = sum(self.rowHeight(r) for r in range(self.rowCount()))
        scrollbar = self.horizontalScrollBar().sizeHint().height()
        self.setMaximumHeight(self.horizontalHeader().sizeHint().height() + rows + scrollbar + 2 * self.frameWidth() + 4)

    def _score_item(self, meta: dict, score: dict | None) -> ScoreItem:
        title = meta.get("title", meta["name"])
        if not isinstance(score, dict):
            item = ScoreItem("—", None)
            item.setToolTip(f"{title} was not computed for this column")
        elif score.get("value") is None:
            reason = score.get("unavailable") or "no reason given"
            item = ScoreItem(UNAVAILABLE, None)
            item.setForeground(QBrush(QColor(128, 128, 128)))
            item.setToolTip(f"{title} is not available: {reason}")
            item.setData(Qt.UserRole, reason)
        else:
            value = float(score["value"])
            warning = score.get("warning")
            item = ScoreItem(format_value(value) + (f" {WARNING_MARK}" if warning else ""), value)
            n = score.get("n")
            tip = f"{title} = {value:.4g}" + (f" from {n} images" if n is not None else "")
            if warning:
                tip += f"\n{WARNING_MARK} {warning}"
            item.setToolTip(tip)
            item.setData(Qt.UserRole, n)
        item.setTextAlignment(Qt.AlignRight | Qt.AlignVCenter)
        return item

    def _best_values(self, rows: list[dict]) -> dict[str, float]:
        best = {}
        for meta in self.metrics:
            values = [float(s["value"]) for row in rows
                      if isinstance(s := (row.get("scores") or {}).get(meta["name"]), dict) and s.get("value") is not None]
            if len(set(values)) > 1:  # a tie of every column marks nothing
                best[meta["name"]] = max(values) if meta.get("higher_is_better", True) else min(values)
        return best

    # ------------------------------------------------------------------ reading back (tests, exports)
    def column_of(self, metric: str) -> int:
        return 1 + [m["name"] for m in self.metrics].index(metric)

    def row_of(self, column_key: str) -> int:
        for r in range(self.rowCount()):
            if self.item(r, 0).data(Qt.UserRole) == column_key:
                return r
        raise KeyError(column_key)

    def cell(self, column_key: str, metric: str) -> QTableWidgetItem:
        return self.item(self.row_of(column_key), self.column_of(metric))

    def column_order(self) -> list[str]:
        """The gallery columns top to bottom, as sorted now."""
        return [self.item(r, 0).data(Qt.UserRole) for r in range(self.rowCount())]


def has_values(meta: dict, rows: list[dict]) -> bool:
    return any(isinstance(s := (row.get("scores") or {}).get(meta["name"]), dict) and s.get("value") is not None
               for row in rows)


def notes_text(evaluation: dict | None) -> str:
    """The legend, and why whole metrics are missing (one line each), as HTML."""
    if not evaluation:
        return ""
    metrics = metric_meta(evaluation)
    rows = evaluation.get("rows", [])
    lines = []
    missing: dict[str, list[str]] = {}  # reason → the metrics no column has for it (one line per reason)
    for meta in metrics:
        scores = [(row.get("scores") or {}).get(meta["name"]) for row in rows]
        reasons = {s.get("unavailable") for s in scores if isinstance(s, dict) and s.get("value") is None}
        if scores and len(reasons) == 1 and all(isinstance(s, dict) and s.get("value") is None for s in scores):
            missing.setdefault(str(reasons.pop()), []).append(meta.get("title", meta["name"]))
    warned = sorted({meta.get("title", meta["name"]) for meta in metrics for row in rows
                     if ((row.get("scores") or {}).get(meta["name"]) or {}).get("warning")})
    legend = (f"↑ higher is better, ↓ lower is better · <b>bold</b>: best of its metric · {BEST_MARK} recommended · "
              f"{WARNING_MARK} few images, read with care · “{UNAVAILABLE}”: hover for the reason · "
              "hover a score for its image count")
    lines.append(legend)
    if warned:
        lines.append(f"{WARNING_MARK} {', '.join(html.escape(w) for w in warned)}: too few images for a stable number "
                     "(hover for details); generate more seeds or prompts to firm it up.")
    for reason, titles in missing.items():
        lines.append(f"<b>{html.escape(', '.join(titles))}</b> not available: {html.escape(reason)}")
    return "<br>".join(lines)
