"""Request and response bodies of every route (pydantic), so /openapi.json and /docs are real.

Requests are strict: a number is not a string, a nested object is not a list. The OpenAI route
also accepts token-id inputs in its schema, only to refuse them with a message that says why
(what LangChain's OpenAIEmbeddings sends by default). TEI's bodies also refuse options they do
not know (OpenAI's ignore them, as OpenAI does: its clients send extra fields).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

from biencoder.index.fusion import Fusion, SearchMode

TokenIds = list[StrictInt]


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")


# -- OpenAI ------------------------------------------------------------------------------------


class EmbeddingRequest(_Request):
    input: StrictStr | list[StrictStr] | TokenIds | list[TokenIds] = Field(
        description="a text or a list of texts (token ids are refused: this server has its own vocabulary)"
    )
    model: StrictStr | None = Field(default=None, description="one of the served model names")
    encoding_format: Literal["float", "base64"] = Field(
        default="float", description="float: JSON numbers; base64: little-endian float32 bytes"
    )
    dimensions: StrictInt | None = Field(
        default=None, description="keep the first N dimensions, then L2-normalise (Matryoshka)"
    )
    user: StrictStr | None = None


class EmbeddingItem(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str
    truncated: bool = Field(description="whether the input was cut at the model's max_seq_length")


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingItem]
    model: str
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class OpenAIErrorBody(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIError(BaseModel):
    error: OpenAIErrorBody


# -- search ------------------------------------------------------------------------------------


class SearchRequest(_Request):
    query: StrictStr | None = Field(default=None, description="one query (or give `queries`)")
    queries: list[StrictStr] | None = Field(default=None, description="several queries")
    k: StrictInt = Field(default=10, description="hits per query")
    model: StrictStr | None = None
    mode: SearchMode | None = Field(
        default=None,
        description="dense, lexical (BM25 on the query words) or hybrid (both, fused); default: "
        "hybrid where the index has a lexical part (`biencoder index ... --lexical`), else dense",
    )
    fusion: Fusion | None = Field(
        default=None, description="hybrid: convex or rrf (default: the index's tuned one, else convex)"
    )
    alpha: StrictFloat | None = Field(
        default=None,
        ge=0,
        le=1,
        description="hybrid, convex fusion: the dense side's weight, used as given "
        "(default: the index's tuned one, else the library's, adapted per query)",
    )
    candidates: StrictInt | None = Field(
        default=None, ge=1, description="hybrid: each side's hits before fusion (default 1000)"
    )


class Hit(BaseModel):
    id: str
    score: float = Field(description="the mode's score: similarity, BM25, or the fused score")
    dense_score: float | None = Field(
        default=None, description="hybrid: the dense side's score (null where that side missed the hit)"
    )
    lexical_score: float | None = Field(
        default=None, description="hybrid: the BM25 score (null where that side missed the hit)"
    )
    text: str | None = Field(default=None, description="the stored text, where the index keeps texts")


class SearchItem(BaseModel):
    object: Literal["search_result"] = "search_result"
    index: int
    query: str
    hits: list[Hit]
    truncated: bool
    note: str | None = Field(
        default=None, description="why the hits are one-sided (no lexical match: stop words only, ...)"
    )


class SearchResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[SearchItem]
    model: str
    mode: SearchMode = Field(description="the mode the search ran in")
    usage: Usage


# -- TEI ---------------------------------------------------------------------------------------


class _TEIRequest(BaseModel):
    """TEI's bodies refuse what they do not know: a misspelt option is an error, not a no-op."""

    model_config = ConfigDict(extra="forbid")


class TruncationDirection(StrEnum):
    """Which end of a long input is cut (TEI's spellings, either case)."""

    RIGHT = "right"
    LEFT = "left"

    @classmethod
    def _missing_(cls, value: object) -> TruncationDirection | None:
        if isinstance(value, str) and value in ("Right", "Left"):
            return cls(value.lower())
        return None


_TRUNCATE = Field(default=None, description="cut long inputs (default: the server's --auto-truncate)")
_DIRECTION = Field(
    default=TruncationDirection.RIGHT,
    description="right keeps the start of a long input, left keeps its end (special tokens stay)",
)
_PROMPT = Field(default=None, description="a prompt of the model's config, prepended to each input")


class EmbedRequest(_TEIRequest):
    inputs: StrictStr | list[StrictStr]
    truncate: StrictBool | None = _TRUNCATE
    truncation_direction: TruncationDirection = _DIRECTION
    normalize: StrictBool = True
    dimensions: StrictInt | None = Field(
        default=None, description="keep the first N dimensions, then L2-normalise if `normalize`"
    )
    prompt_name: StrictStr | None = _PROMPT
    encoding_format: Literal["float", "base64"] | None = Field(
        default=None,
        description="what huggingface_hub's InferenceClient may send: `float` is the answer anyway; "
        "`base64` is refused (offered on /v1/embeddings)",
    )


class EmbedAllRequest(_TEIRequest):
    inputs: StrictStr | list[StrictStr]
    truncate: StrictBool | None = _TRUNCATE
    truncation_direction: TruncationDirection = _DIRECTION
    prompt_name: StrictStr | None = _PROMPT


class SimilarityInputs(_TEIRequest):
    source_sentence: StrictStr
    sentences: list[StrictStr]


class SimilarityParameters(_TEIRequest):
    truncate: StrictBool | None = _TRUNCATE
    truncation_direction: TruncationDirection = _DIRECTION
    prompt_name: StrictStr | None = _PROMPT


class SimilarityRequest(_TEIRequest):
    inputs: SimilarityInputs
    parameters: SimilarityParameters | None = Field(
        default=None, description="TEI's place for the options (what huggingface_hub sends)"
    )
    truncate: StrictBool | None = Field(default=None, description="as `parameters.truncate`")
    prompt_name: StrictStr | None = Field(default=None, description="as `parameters.prompt_name`")


class TokenizeRequest(_TEIRequest):
    inputs: StrictStr | list[StrictStr]
    add_special_tokens: StrictBool = True
    prompt_name: StrictStr | None = None


class DecodeRequest(_TEIRequest):
    ids: TokenIds | list[TokenIds] = Field(description="the token ids of one text, or of several")
    skip_special_tokens: StrictBool = True


class SimpleToken(BaseModel):
    id: int
    text: str
    special: bool
    start: int | None
    stop: int | None


class TEIError(BaseModel):
    error: str
    error_type: str


class FusionInfo(BaseModel):
    source: str = Field(description="chosen: the label-free decision at build; tuned: tune-fusion's")
    fusion: Fusion
    alpha: float = Field(description="the dense side's weight (1.0 with calibrated: the dense order)")
    normalization: str
    adaptive: bool = Field(description="whether alpha moves per query towards the surer side")
    reason: str | None = Field(default=None, description="why the decision chose it")
    evidence: dict[str, Any] | None = Field(
        default=None, description="what it was chosen on: probes and each candidate's MRR@10, or the CV"
    )


class SearchInfo(BaseModel):
    modes: list[SearchMode] = Field(description="the modes /v1/search offers over this index")
    default_mode: SearchMode = Field(description="the mode of a request that names none")
    has_lexical: bool = Field(description="whether the index has a lexical (BM25) part")
    fusion_alpha: float | None = Field(
        description="the convex-fusion alpha hybrid search defaults to, if the index records one"
    )
    fusion: FusionInfo | None = Field(
        default=None, description="hybrid search's default fusion, as recorded with the index (fusion.json)"
    )


class Info(BaseModel):
    model_id: str
    served_model_names: list[str]
    model_type: dict[str, dict[str, str]]
    dimension: int
    max_input_length: int
    similarity_fn_name: str
    backend: str
    precision: str
    max_concurrent_requests: int
    max_batch_tokens: int
    max_batch_requests: int | None
    max_client_batch_size: int
    payload_limit: int
    max_input_chars: int
    auto_truncate: bool
    index: dict[str, Annotated[int | str, Field()]] | None
    search: SearchInfo | None = Field(default=None, description="how /v1/search searches the index")
    version: str


class Health(BaseModel):
    status: Literal["ok", "unhealthy", "draining"]
    detail: str | None = None
