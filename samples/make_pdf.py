"""Write a minimal text PDF (Helvetica, one page) without any PDF library.

    python samples/make_pdf.py   # regenerates samples/corpus/06-winter-assembly.pdf
"""

from pathlib import Path

LINES = [
    "Minutes of the Winter Assembly, December 2025",
    "",
    "The Winter Assembly of the Quillmarsh Lantern Ferry met in the Brellin boathouse.",
    "Thirty-eight of the 41 member households voted.",
    "The assembly approved a fourth boat, to be named the Ember Wren, for the 2027 season.",
    "The Ember Wren will be built by the Sarnock Point boatyard for 96,000 kestrels.",
    "The adult single fare stays at 3 kestrels and 20 pennies for 2026.",
]


def build_pdf(lines: list[str], title: str) -> bytes:
    text = ["BT", "/F1 11 Tf", "14 TL", "50 780 Td"]
    for line in lines:
        escaped = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
        text.append(f"({escaped}) Tj T*")
    stream = "\n".join([*text, "ET"]).encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 842] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        f"<< /Title ({title}) >>".encode("latin-1"),
    ]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R /Info 6 0 R >>\n" % (len(objects) + 1)
    out += b"startxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)


if __name__ == "__main__":
    target = Path(__file__).parent / "corpus" / "06-winter-assembly.pdf"
    target.write_bytes(build_pdf(LINES, "Winter Assembly minutes 2025"))
    print(f"wrote {target}")
