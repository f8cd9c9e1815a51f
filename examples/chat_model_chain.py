"""MoA wherever LangChain takes a chat model: here in a prompt | model | parser chain."""

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

from langgraph_moa import MoAChatModel

llm = MoAChatModel(config="local-moa", max_tokens=160)
chain = (
    ChatPromptTemplate.from_messages(
        [("system", "You answer in two sentences."), ("user", "Explain {topic}.")]
    )
    | llm
    | StrOutputParser()
)

print(chain.invoke({"topic": "why the sky is blue"}))
for token in chain.stream({"topic": "what a hash table is"}):
    print(token, end="", flush=True)
print()
