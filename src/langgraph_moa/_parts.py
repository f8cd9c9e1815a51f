"""The types of a message's content parts: which hold text, and which an image, audio, ...

A part's ``type`` is OpenAI's (``image_url``, ``input_audio``, ``file``), a LangChain data
block's (``image``, ``audio``, ``video``, ``text-plain``) or vLLM's own (``video_url``,
``audio_url``). Listed in three places they disagreed: the retry layer named vLLM's refusal
of a ``video_url`` while `moa serve` refused that part itself with a 400. The server's
accepted types (`PART_TYPES`), the retry layer's media (`MEDIA_PARTS`) and the page's marks
all read this one list.
"""

from __future__ import annotations

MEDIA_PARTS: dict[str, str] = {
    **{"image_url": "image", "input_audio": "audio", "file": "file"},  # OpenAI's
    **{"image": "image", "audio": "audio", "video": "video"},  # LangChain's data blocks
    **{"video_url": "video", "audio_url": "audio"},  # vLLM's own
}
"""The content-part types of an image, audio, a video or a file -> what the part holds."""

OTHER_TEXT_PARTS: dict[str, str] = {"text-plain": "text", "refusal": "refusal"}
"""The content-part types besides ``text`` that hold text -> the key it is under."""

PART_TYPES: tuple[str, ...] = ("text", "refusal", *MEDIA_PARTS, "text-plain")
"""Every content-part type a backend can take: text, OpenAI's refusal, the media, and
LangChain's plain-text block (converted per provider). `moa serve` refuses any other: it was
forwarded to every call, and the client got the provider's refusal as a 502 (OpenAI and
llama.cpp refuse unknown types)."""
