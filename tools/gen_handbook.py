#!/usr/bin/env python3
"""Writes the example handbook's PDF and DOCX (examples/handbook/).

The handbook belongs to a fictional organisation, Brindlemoor Health Cooperative, so no
base model can know its facts: the README's main job fine-tunes on these files and asks
about them before and after. The Markdown part (welcome.md) is written by hand; this script
writes the other two so that each of the PDF and DOCX readers is exercised by real files
made by common tools.

Versions used for the committed files: Python 3, reportlab 5.1.0, python-docx 1.2.0
(`pip install --target /tmp/pydoc reportlab==5.1.0 python-docx==1.2.0`, then
`PYTHONPATH=/tmp/pydoc python3 tools/gen_handbook.py`).
"""

from pathlib import Path

from docx import Document
from reportlab import rl_config
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import getSampleStyleSheet
from reportlab.platypus import PageBreak, Paragraph, SimpleDocTemplate, Spacer

# Invariant mode drops the creation time and random document id, so reruns give the same bytes.
rl_config.invariant = 1

OUT = Path(__file__).resolve().parent.parent / "examples" / "handbook"

POLICIES = [
    ("h1", "Brindlemoor Health Cooperative: Staff Policies"),
    ("h2", "1. Annual leave"),
    ("p", "Every member of staff at Brindlemoor Health Cooperative receives 27 days of paid "
          "annual leave per year, in addition to public holidays. Leave is requested on form "
          "BR-4 at least ten days in advance and is approved by your team lead. Up to five "
          "unused days may be carried over into the next year."),
    ("h2", "2. Reporting an incident"),
    ("p", "Any incident that harms or could have harmed a patient, visitor or colleague must "
          "be reported within 36 hours. Incidents are reported on form BR-17 and sent to the "
          "Patient Safety Office, which is on the first floor of the Alder Wing. Reports are "
          "confidential and are never used to blame an individual."),
    ("h2", "3. Patient records"),
    ("p", "Patient records are kept for 11 years after the last visit and are then destroyed "
          "securely. Records never leave the clinic's systems: staff may not copy them to "
          "personal devices, email or cloud storage."),
    ("break", ""),
    ("h2", "4. Dress code"),
    ("p", "Clinical staff wear teal lanyards and administrative staff wear grey lanyards, so "
          "that patients can tell who to ask for medical help. Closed shoes are required in "
          "all clinical areas."),
    ("h2", "5. Working hours"),
    ("p", "Core hours are 10:00 to 15:00. Outside core hours, staff choose their start and "
          "finish times with their team lead. Night shifts run from 21:00 to 07:00 and are "
          "paid at one and a half times the day rate."),
    ("h2", "6. Training"),
    ("p", "Each member of staff has a training budget of 900 credits per year. First-aid "
          "refresher training is mandatory every two years and is booked through the People "
          "Team."),
]

CONTACTS_INTRO = [
    ("h1", "Brindlemoor Health Cooperative: Contacts and On-call"),
    ("p", "This page lists who to call at Brindlemoor Health Cooperative. Internal extensions "
          "can be dialled from any clinic phone."),
]
CONTACTS_TABLE = [
    ("Service", "Extension", "Notes"),
    ("Security desk", "4471", "Staffed day and night"),
    ("IT helpdesk", "2290", "helpdesk@brindlemoor.example"),
    ("Patient Safety Office", "3318", "Incident reports on form BR-17"),
    ("People Team", "1502", "Leave, training and payroll"),
]
CONTACTS_OUTRO = [
    ("h2", "Leadership"),
    ("p", "The Chief Medical Officer of Brindlemoor Health Cooperative is Dr. Ansel Marrowby. "
          "The Head of Nursing is Priya Olendt. The cooperative's board is elected by its "
          "members every three years."),
    ("h2", "On-call"),
    ("bullet", "The on-call rota is published every Thursday on the staff intranet."),
    ("bullet", "Swaps must be agreed by both colleagues and logged with the People Team."),
    ("bullet", "The on-call doctor carries the red pager, number 77."),
]


def write_pdf(path: Path) -> None:
    styles = getSampleStyleSheet()
    style = {"h1": styles["Title"], "h2": styles["Heading2"], "p": styles["BodyText"]}
    story = []
    for kind, text in POLICIES:
        if kind == "break":
            story.append(PageBreak())
            continue
        story.append(Paragraph(text, style[kind]))
        story.append(Spacer(1, 6))
    doc = SimpleDocTemplate(str(path), pagesize=A4, title="Staff Policies",
                            author="Brindlemoor Health Cooperative (fictional)")
    doc.build(story)


def write_docx(path: Path) -> None:
    doc = Document()
    doc.core_properties.title = "Contacts and On-call"
    doc.core_properties.author = "Brindlemoor Health Cooperative (fictional)"

    def add(items):
        for kind, text in items:
            if kind == "h1":
                doc.add_heading(text, level=1)
            elif kind == "h2":
                doc.add_heading(text, level=2)
            elif kind == "bullet":
                doc.add_paragraph(text, style="List Bullet")
            else:
                doc.add_paragraph(text)

    add(CONTACTS_INTRO)
    table = doc.add_table(rows=0, cols=3)
    for row in CONTACTS_TABLE:
        cells = table.add_row().cells
        for cell, text in zip(cells, row):
            cell.text = text
    add(CONTACTS_OUTRO)
    # A fixed creation time keeps the file reproducible from run to run.
    import datetime
    fixed = datetime.datetime(2026, 12, 1, tzinfo=datetime.timezone.utc)
    doc.core_properties.created = fixed
    doc.core_properties.modified = fixed
    doc.save(str(path))


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    write_pdf(OUT / "policies.pdf")
    write_docx(OUT / "contacts.docx")
    print("wrote", OUT / "policies.pdf", "and", OUT / "contacts.docx")
