"""The reference for bench/letters.py: the same letter laid out by hand with fpdf2.

Every block is placed at the coordinates the stylesheet gives it (the zones of
cpms_admin/letters/pdf/zones.py), in the same fonts (Liberation Sans, DejaVu Sans Mono) and sizes,
and each letter's whole page is laid out and drawn again, as a hand-placed layout does: no
template, no style computation. fpdf2 subsets the fonts when the file is written.
"""

import subprocess
from collections.abc import Sequence
from functools import cache
from pathlib import Path

from fpdf import FPDF

from cpms_admin.french import french_date
from cpms_admin.letters.pdf.content import LetterContent

BLUE, GREY, INK = (11, 92, 138), (74, 85, 104), (29, 36, 48)
PT = 25.4 / 72  # mm per point

INTRO = {
    "first_access": (
        "Nous avons le plaisir de vous compter parmi nos adhérents et vous souhaitons la "
        "bienvenue.",
        "Votre Espace Adhérent vous permet de suivre votre dossier en ligne, à tout moment. "
        "Pour votre première connexion, utilisez le code de sécurité ci-dessous : il vous "
        "permettra de créer votre mot de passe personnel.",
    ),
    "requested_code": (
        "Comme suite à votre demande, nous vous adressons un code de sécurité à usage unique. "
        "Il vous permet d’accéder à votre Espace Adhérent et d’y créer un nouveau mot de passe.",
        "Si vous n’êtes pas à l’origine de cette demande, contactez notre Service Adhérents.",
    ),
    "pin_reset": (
        "À votre demande, votre mot de passe de l’Espace Adhérent a été réinitialisé : votre "
        "ancien mot de passe n’est plus valable.",
        "Pour en créer un nouveau, utilisez le code de sécurité à usage unique ci-dessous.",
    ),
}
SUBJECT = {
    "first_access": "Bienvenue – votre code de première connexion à l’Espace Adhérent",
    "requested_code": "Votre code de sécurité pour l’Espace Adhérent",
    "pin_reset": "Réinitialisation de votre mot de passe de l’Espace Adhérent",
}
NOTICE = (
    "Ce code ne peut servir qu’une seule fois. Passé sa date de validité, ou en cas de perte, "
    "demandez un nouveau code sur l’Espace Adhérent avec le lien « Obtenir mon code de "
    "sécurité ».",
    "Votre mot de passe comporte exactement 6 chiffres. Après 3 essais erronés, patientez "
    "quelques minutes avant une nouvelle tentative.",
)


@cache
def font_file(pattern: str) -> str:
    command = ["fc-match", "-f", "%{file}", pattern]
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout


def new_document() -> FPDF:
    pdf = FPDF(format="A4", unit="mm")
    pdf.set_auto_page_break(False)
    pdf.set_margins(20, 15, 15)
    pdf.add_font("sans", "", font_file("Liberation Sans"))
    pdf.add_font("sans", "B", font_file("Liberation Sans:bold"))
    pdf.add_font("mono", "B", font_file("DejaVu Sans Mono:bold"))
    return pdf


def write_letters(letters: Sequence[LetterContent], out_path: Path) -> None:
    """All `letters` into one PDF, one page each, laid out by hand."""
    pdf = new_document()
    for letter in letters:
        draw_letter(pdf, letter)
    pdf.output(str(out_path))


def _text(pdf: FPDF, x: float, y: float, text: str, size: float, style: str = "") -> None:
    pdf.set_font("sans", style, size)
    pdf.set_xy(x, y)
    pdf.cell(text=text)


def _paragraph(pdf: FPDF, text: str, size: float = 10, gap: float = 2.4) -> None:
    pdf.set_font("sans", "", size)
    pdf.set_x(20)
    pdf.multi_cell(175, size * 1.38 * PT, text)
    pdf.ln(gap)


def draw_letter(pdf: FPDF, letter: LetterContent) -> None:
    pdf.add_page()
    host = letter.layout.portal_host
    pdf.set_fill_color(*BLUE)
    pdf.rect(20, 15, 19, 9, style="F", round_corners=True, corner_radius=1.5)
    pdf.set_text_color(255, 255, 255)
    _text(pdf, 22.6, 16.5, "CPMS", 15, "B")
    pdf.set_text_color(*BLUE)
    _text(pdf, 43.7, 17, "Espace Adhérent", 12, "B")
    pdf.set_text_color(*GREY)
    for n, line in enumerate(letter.return_address):
        _text(pdf, 20, 27 + n * 4.05, line, 8.5)
    _text(pdf, 20, 46.2, f"Notre référence : {letter.reference}", 8.5)
    _text(pdf, 20, 50.3, f"N° de Sécurité sociale : {letter.nir_masked}", 8.5)
    pdf.set_text_color(*INK)
    for n, line in enumerate(letter.recipient_lines):
        _text(pdf, 110, 55 + n * 4.7, line, 10)
    _text(pdf, 110, 94, f"{letter.place}, le {french_date(letter.letter_date)}", 10)
    wording = letter.wording if letter.wording in INTRO else "first_access"
    pdf.set_xy(20, 104)
    pdf.set_font("sans", "B", 10)
    pdf.cell(text="Objet : ")
    pdf.set_text_color(*BLUE)
    pdf.cell(text=SUBJECT[wording])
    pdf.set_text_color(*INK)
    pdf.set_y(113)
    _paragraph(pdf, letter.salutation)
    for text in INTRO[wording]:
        _paragraph(pdf, text)
    top = pdf.get_y() + 3
    pdf.set_draw_color(*BLUE)
    pdf.set_line_width(0.6)
    pdf.rect(52.5, top, 110, 28, round_corners=True, corner_radius=2)
    pdf.set_text_color(*GREY)
    pdf.set_font("sans", "", 9)
    pdf.set_xy(52.5, top + 3)
    pdf.cell(110, 4, "Votre code de sécurité à usage unique", align="C")
    pdf.set_text_color(17, 17, 17)
    pdf.set_font("mono", "B", 24)
    pdf.set_char_spacing(3.2 / PT)
    pdf.set_xy(52.5, top + 8)
    pdf.cell(110, 11, letter.code, align="C")
    pdf.set_char_spacing(0)
    pdf.set_text_color(*INK)
    pdf.set_font("sans", "", 9.5)
    pdf.set_xy(52.5, top + 20.5)
    pdf.cell(110, 4.6, f"Valable jusqu’au {french_date(letter.code_expires_on)}", align="C")
    pdf.set_y(top + 33)
    pdf.set_text_color(*BLUE)
    pdf.set_font("sans", "B", 10.5)
    pdf.set_x(20)
    pdf.cell(text="Pour vous connecter")
    pdf.ln(6)
    pdf.set_text_color(*INK)
    steps = (
        f"Rendez-vous sur votre Espace Adhérent : {host}",
        "Saisissez votre numéro de Sécurité sociale et le code de sécurité ci-dessus, puis "
        "validez.",
        "Créez votre mot de passe personnel à 6 chiffres, puis confirmez-le en le saisissant "
        "une seconde fois.",
        "Acceptez les Conditions Générales d’Utilisation si elles vous sont présentées.",
    )
    for number, step in enumerate(steps, start=1):
        pdf.set_font("sans", "B", 10)
        pdf.set_text_color(*BLUE)
        _text(pdf, 22, pdf.get_y(), f"{number}.", 10, "B")
        pdf.set_text_color(*INK)
        pdf.set_font("sans", "", 10)
        pdf.set_x(28)
        pdf.multi_cell(167, 4.87, step)
        pdf.ln(1.8)
    top = pdf.get_y() + 3
    pdf.set_fill_color(242, 246, 249)
    pdf.rect(20, top, 175, 19, style="F")
    pdf.set_fill_color(200, 214, 224)
    pdf.rect(20, top, 1, 19, style="F")
    pdf.set_y(top + 2)
    for text in NOTICE:
        pdf.set_font("sans", "", 9)
        pdf.set_x(24)
        pdf.multi_cell(168, 4.4, text)
        pdf.ln(1)
    pdf.set_y(top + 23)
    _paragraph(
        pdf,
        "Vous vous connecterez ensuite avec votre numéro de Sécurité sociale et ce mot de passe.",
    )
    _paragraph(
        pdf,
        f"Nous vous prions d’agréer, {letter.closing_title}, l’expression de nos salutations "
        "distinguées.",
    )
    signature = pdf.get_y() + 4
    _text(pdf, 110, signature, "Le Service Adhérents", 10)
    _text(pdf, 110, signature + 4.87, "CPMS", 10)
    pdf.set_draw_color(200, 214, 224)
    pdf.set_line_width(0.3)
    pdf.line(20, 277, 195, 277)
    pdf.set_text_color(*GREY)
    _text(
        pdf,
        20,
        278.5,
        "Code personnel à usage unique : ne le communiquez à personne, CPMS ne vous le "
        "demandera jamais.",
        7.5,
    )
    _text(pdf, 20, 282, f"CPMS – Service Adhérents – Espace Adhérent : {host}", 7.5)
