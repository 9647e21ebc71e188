"""Line patterns that mark quoted history and signatures, in many languages.

Every pattern here is matched against ONE line (or at most three joined lines
of an attribution), never against the whole body, and none nests unbounded
quantifiers, so matching stays linear in the size of the message.
"""

from __future__ import annotations

import re

# A line quoted with `>` (also `> >`, `>>`, indented `>`).
# (">:" alone is the wrapped end of an attribution, not a quote.)
QUOTED = re.compile(r"^[ \t]{0,3}>(?![:：]\s*$)")

# --- attribution lines: "On <date>, <name> wrote:" and friends -------------

# The verb of an attribution, per language (the line must end with ":" soon after).
_VERBS = (
    r"wrote|writes|a\s+écrit|a\s+ecrit|schrieb|schreef|escribió|escribio|ha\s+scritto|"
    r"scrisse|escreveu|skrev|pisze|napisał\(a\)|napisała|napisał|napisal|kirjoitti|"
    r"написал\(а\)|написала|написал|写道|írta|wrote\s+on"
)
ATTRIBUTION = re.compile(
    rf"(?:^|[\s,)>\"'])(?:{_VERBS})(?:\s[^\n]{{0,160}})?[:：]\s*$", re.IGNORECASE
)

# Words an attribution starts with, so a wrapped one can be found upwards.
ATTRIBUTION_START = re.compile(
    r"^\s*(?:on|le|am|el|il|op|em|den|dne|w\s+dniu|dnia|quoting|zitat\s+von|citando|"
    r"\d{4}年|\d{4}/\d{1,2}/\d{1,2}|在)\b",
    re.IGNORECASE,
)
# Attributions that carry no verb: Japanese Gmail ("2022年1月1日(金) 9:00 名 <a@b>:"),
# Horde's "Quoting X:".
ATTRIBUTION_NO_VERB = re.compile(
    r"^\s*(?:\d{4}年\d{1,2}月\d{1,2}日[^\n]{0,200}[:：]|quoting\s[^\n]{1,200}:|"
    r"zitat\s+von\s[^\n]{1,200}:)\s*$",
    re.IGNORECASE,
)
# Yandex, mail.ru, old Gmail: "30.09.2017, 18.30, "Name" <a@b>:" -- a date or
# time, an address, then the colon that ends the line.
DATE_OR_TIME = re.compile(r"\d{1,2}[:.]\d{2}|\d{4}")
ADDRESS_END = re.compile(r"[\w.+\-]@[\w\-]+(?:\.[\w\-]+)+>?\)?[:：]$")
# Some clients drop the colon: "On Wed, 14 Nov 2018 08:14 -0200 John <j@d.com> wrote".
ATTRIBUTION_NO_COLON = re.compile(r"^\s*on\s[^\n]{0,300}\d[^\n]{0,300}\swrote\s*$", re.IGNORECASE)
# A wrapped attribution's later lines: "<a@b> wrote:", "a écrit :", "john@x.com>:".
CONTINUATION = re.compile(rf"^\s*(?:[<(\[\"'>]|\S+@|(?:{_VERBS})\b)", re.IGNORECASE)

# --- separators of Outlook, Thunderbird, Lotus Notes, forwards ------------

# "-----Original Message-----", "---------- Forwarded message ---------",
# "----- Forwarded by X on ... -----": a title between runs of these (see
# `quotes._dashed_title`, plain string code so no regex can backtrack).
RULE_CHARS = "-=_*"
TITLE_WORDS = re.compile(
    r"message|nachricht|mensaje|messaggio|bericht|meddelande|meddelelse|melding|wiadomo|"
    r"mensagem|wrote|forward|original|origine|besked|transf|weitergeleitet|reenviado|inoltrato|"
    r"doorgestuurd|encaminhada|videresend|vidarebefordra|viesti|сообщение",
    re.IGNORECASE,
)
# Apple Mail and friends: "Begin forwarded message:" and translations.
FORWARD_LINE = re.compile(
    r"^\s*(?:begin\s+forwarded\s+message|début\s+du\s+message\s+réexpédié|"
    r"anfang\s+der\s+weitergeleiteten\s+(?:nachricht|e-mail)|inicio\s+del\s+mensaje\s+reenviado|"
    r"inizio\s+messaggio\s+inoltrato|início\s+da\s+mensagem\s+reencaminhada|"
    r"begin\s+doorgestuurd\s+bericht|videresendt\s+meddelelse|vidarebefordrat\s+meddelande|"
    r"videresendt\s+melding|początek\s+przekazywanej\s+wiadomości)\s*:?\s*$",
    re.IGNORECASE,
)
# A horizontal rule of underscores (Outlook's HTML <hr> converted to text).
UNDERSCORE_RULE = re.compile(r"^\s*_{8,}\s*$")
DASH_RULE = re.compile(r"^\s*-{8,}\s*$")
# Any plain rule ("====", "-----") a client may draw above a header block.
ANY_RULE = re.compile(r"^\s*[-=_*]{3,}\s*$")

# --- header blocks: From:/Sent:/To:/Subject: and localised ----------------

# Each category's keys, "|"-separated (some keys hold a space).
_HEADER_KEYS: dict[str, str] = {
    "from": "from|de|von|da|van|från|fra|od|lähettäjä|от|差出人|发件人|寄件者|feladó",
    "sent": (
        "sent|date|envoyé|envoyé le|envoye|gesendet|datum|enviado|enviado el|enviada em|"
        "enviado em|fecha|inviato|data|verzonden|skickat|sendt|wysłano|message du|lähetetty|"
        "päivämäärä|отправлено|дата|送信日時|日付|发送时间|sent at"
    ),
    "to": "to|à|a|an|para|aan|till|til|do|pour|vastaanottaja|кому|宛先|收件人",
    "cc": "cc|copie à|kopie|kopi|cco|dw|kopio|копия|kopia",
    "subject": (
        "subject|objet|sujet|betreff|asunto|oggetto|onderwerp|ämne|emne|temat|assunto|aihe|"
        "тема|件名|主题|主旨"
    ),
}
KEY_CATEGORY: dict[str, str] = {
    key: category for category, keys in _HEADER_KEYS.items() for key in keys.split("|")
}
_ALL_KEYS = "|".join(
    re.escape(key).replace(r"\ ", r"\s+") for key in sorted(KEY_CATEGORY, key=len, reverse=True)
)
# "From: x", "*From:* x", "De : x", "Sent:\tx" at the start of a line.
HEADER_LINE = re.compile(
    rf"^[ \t]{{0,12}}\*{{0,2}}(?P<key>{_ALL_KEYS})\*{{0,2}}[ \t\u00a0\u202f]{{0,2}}\*{{0,2}}[:：]",
    re.IGNORECASE,
)
# Lotus Notes names the sender above its To:/cc:/Subject: block:
# "John Doe@ECT", "05/02/2001 10:00 AM", "\"Jane\" <j@x> on 05/02/2001 10:00:00 AM".
LOTUS_SENDER = re.compile(r"\d{1,2}/\d{1,2}/\d{2,4}|@|\b[AP]M\s*$")

# --- signatures ---------------------------------------------------------

# "—" alone: "--" that a client's autocorrect turned into an em dash.
SIG_DELIMITER = re.compile(r"^(?:--[ \t]?|—)$")
# Lines mobile and web clients append; the whole line must be one of these.
MOBILE_SIGNATURE = re.compile(
    r"^\s*(?:"
    r"sent\s+from\s+my\s+[\w.\-'() ]{1,40}|"
    r"get\s+outlook\s+for\s+(?:ios|android)|"
    r"envoyé\s+à\s+partir\s+de\s+[\w.\-' ]{1,40}|"
    r"télécharger\s+outlook\s+pour\s+(?:ios|android)|"
    r"envoyé\s+(?:de|depuis)\s+(?:mon|ma|l')\s*[\w.\-' ]{1,40}|"
    r"(?:von|gesendet\s+von)\s+meinem\s+[\w.\-' ]{1,40}(?:gesendet)?|"
    r"gesendet\s+(?:von|mit)\s+[\w.\-' ]{1,40}|"
    r"enviado\s+(?:desde|do|de)\s+(?:mi|meu|o\s+meu|a\s+minha|minha)\s+[\w.\-' ]{1,40}|"
    r"inviato\s+da\s+[\w.\-' ]{1,40}|"
    r"verzonden\s+(?:vanaf|met|van)\s+(?:mijn\s+)?[\w.\-' ]{1,40}|"
    r"skickat\s+från\s+(?:min\s+)?[\w.\-' ]{1,40}|"
    r"sendt\s+fra\s+(?:min\s+)?[\w.\-' ]{1,40}|"
    r"wysłane\s+z\s+(?:mojego\s+)?[\w.\-' ]{1,40}|"
    r"lähetetty\s+(?:iphonesta|android|laitteesta)[\w.\-' ]{0,40}|"
    r"отправлено\s+с\s+[\w.\-' ]{1,40}|"
    r"iphoneから送信|ipadから送信|androidから送信"
    r")\s*(?:<[^>\s]{1,200}>)?\s*$",
    re.IGNORECASE,
)
# "Sent from a magnificent torch of pixels", "Sent with Sparrow": the words
# after "sent from/via/with" must name a device or a mail app.
SENT_VIA = re.compile(
    r"^\s*sent\s+(?:from|via|using|with)\s+(?P<rest>[\w.\-'() ]{1,60}?)\s*"
    r"(?:\(?<?https?://[^\s>]{1,200}>?\)?)?\s*$",
    re.IGNORECASE,
)
DEVICE_WORDS = re.compile(
    r"iphone|ipad|ipod|android|blackberry|mobile|phone|device|galaxy|samsung|pixel|"
    r"smartphone|tablet|outlook|mail|yahoo|aol|gmail|windows|huawei|xperia|htc|nokia|"
    r"motorola|\blg\b|oneplus|xiaomi|typeapp|sparrow|spark|bluemail|edison|proton|fastmail|"
    r"airmail|newton|zoho|mailbird|thunderbird",
    re.IGNORECASE,
)
# Mailman's footer under each list post.
LIST_FOOTER_RULE = re.compile(r"^\s*_{2,}\s*$")
LIST_FOOTER_NAME = re.compile(r"\bmailing\s+list\b|^\s*\S+(?:@| at )\S+\s*$", re.IGNORECASE)
