"""Hostile model replies for the page's markdown renderer (tests/browser/test_xss.py).

Every reply is text a model could write. A payload that runs sets `window.__pwned` or opens
a dialog; the test also looks at what the reply became in the page. `CORPUS` was written
before the renderer existed; cases added after a bug was found go in `FOUND_LATER`, so the
two are scored apart.
"""

from __future__ import annotations

from typing import Final

PWN: Final = "window.__pwned=1"

CORPUS: Final[dict[str, str]] = {
    # Raw HTML, which must show as text.
    "script-tag": f"<script>{PWN}</script>",
    "img-onerror": f'<img src=x onerror="{PWN};alert(1)">',
    "svg-onload": f'<svg onload="{PWN}"><circle r="1"/></svg>',
    "svg-script": f"<svg><script>{PWN}</script></svg>",
    "iframe-srcdoc": '<iframe srcdoc="<script>parent.__pwned=1</script>"></iframe>',
    "iframe-javascript": '<iframe src="javascript:parent.__pwned=1"></iframe>',
    "event-attribute": f'<div onmouseover="{PWN}" onclick="{PWN}">hover or click</div>',
    "details-ontoggle": f'<details open ontoggle="{PWN}"><summary>x</summary></details>',
    "object-data": f'<object data="javascript:{PWN}"></object>',
    "embed-data-url": '<embed src="data:text/html,<script>parent.__pwned=1</script>">',
    "style-and-link": "<style>body{display:none}</style><link rel=stylesheet href=//evil.test/x>",
    "meta-refresh": f'<meta http-equiv="refresh" content="0;url=javascript:{PWN}">',
    "form-action": f'<form action="javascript:{PWN}"><button>go</button></form>',
    "noscript-mutation": f'<noscript><p title="</noscript><img src=x onerror={PWN}>">',
    "base-href": '<base href="javascript:/">[relative](x)',
    # Markdown links to schemes that run code, however spelled.
    "link-javascript": f"[click me](javascript:{PWN})",
    "link-mixed-case": f"[click me](JaVaScRiPt:{PWN})",
    "link-tab-in-scheme": f"[click me](java\tscript:{PWN})",
    "link-newline-in-scheme": f"[click me](java\nscript:{PWN})",
    "link-control-chars": (
        f"[a](\x01javascript:{PWN}) [b](\x0bjavascript:{PWN}) [c]( javascript:{PWN})"
    ),
    "link-decimal-entity": f"[click me](&#106;avascript:{PWN})",
    "link-hex-entities": f"[click me](&#x6A;avascript&#x3A;{PWN})",
    "link-percent-encoded-colon": f"[click me](javascript%3A{PWN})",
    "link-escaped-colon": f"[click me](javascript\\:{PWN})",
    "link-fullwidth-scheme": (
        "[click me](\uff4a\uff41\uff56\uff41\uff53\uff43\uff52\uff49\uff50\uff54:" + PWN + ")"
    ),
    "link-data-html": "[click me](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "link-vbscript": "[click me](vbscript:msgbox(1))",
    "link-relative-and-protocol-relative": "[a](/api/x) [b](//evil.test/x) [c](?q=1) [d](#top)",
    "link-angle-destination": f"[click me](<javascript:{PWN}>)",
    "link-title-with-quotes": f'[x](https://example.com "a\\" onmouseover=\\"{PWN}")',
    "link-destination-breaks-out": f'[x](https://example.com/"><img src=x onerror={PWN}>)',
    "link-nested-brackets": (
        f"[[inner](javascript:{PWN})](https://example.com) [a[b]c](javascript:{PWN})"
    ),
    "link-reference-definition": f"[click me][1]\n\n[1]: javascript:{PWN}",
    "autolink-javascript": f"<javascript:{PWN}>",
    "autolink-data": f"<data:text/html,<script>{PWN}</script>>",
    # Images are never loaded.
    "image-remote": "![tracking pixel](https://example.com/pixel.png)",
    "image-javascript": f"![x](javascript:{PWN})",
    "image-alt-breaks-out": f'![x" onerror="{PWN}](x)',
    # HTML where markdown keeps text verbatim.
    "html-in-code-span": f"`<img src=x onerror={PWN}>` and ``<script>{PWN}</script>``",
    "html-in-fence": f"```html\n<script>{PWN}</script>\n<img src=x onerror={PWN}>\n```",
    "fence-info-string": (
        f'```" onmouseover="{PWN}\n<b>x</b>\n```\n```<img/src=x/onerror={PWN}>\ncode\n```'
    ),
    "html-in-table": f"| a | b |\n|---|---|\n| <img src=x onerror={PWN}> | [x](javascript:{PWN}) |",
    "html-in-heading-quote-list": (
        f"# <script>{PWN}</script>\n> <img src=x onerror={PWN}>\n- <svg onload={PWN}>"
    ),
    # Text that is hard to show, or costly to parse.
    "rtl-override": f"\u202e[click](javascript:{PWN})\u202d see https://example.com/\u202egnp.exe",
    "very-long-line": "A" * 30_000 + f" [x](javascript:{PWN})",
    "nested-lists-1000": "- " * 1000 + "deep",
    "nested-ordered-lists-1000": "1. " * 1000 + "deep",
    "nested-quotes-1000": "> " * 1000 + f"<img src=x onerror={PWN}>",
    "nested-brackets-1000": "[" * 1000 + "x" + "]" * 1000 + f"(javascript:{PWN})",
    "emphasis-bomb": "*a **b " * 3000 + "_c __d " * 1000,
    "backtick-bomb": "`a ``b ```c " * 1500,
}

FOUND_LATER: Final[dict[str, str]] = {
    # Found by timing the renderer on hostile text: a stored reply may be 256 KiB, and
    # emphasis nested 60,000 deep, or lines and blocks by the ten thousand, each passed to
    # one call as arguments, overflowed the stack.
    "emphasis-nesting-60000": "*_" * 60_000 + "a" + "_*" * 60_000,
    "line-breaks-80000": "a\n" * 80_000,
    "table-rows-40000": "|a|\n|-|\n" + "|x|\n" * 40_000,
    "paragraphs-45000": "a\n\n" * 45_000,
}
