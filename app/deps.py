"""Request dependencies for the shared objects `create_app` puts on `app.state`: settings,
database, assistant, reply tasks and title tasks. The caller's identity is
app/auth/dependencies.py's."""

from typing import Annotated

from fastapi import Depends, Request

from app.assistants import Assistant
from app.config import Settings
from app.kit.db.engine import Database
from app.replies.generation import ReplyTasks
from app.replies.relay import ReplyRelay
from app.titles.service import TitleTasks

# These are `async` although they do not await: FastAPI runs a plain `def` dependency in a
# worker thread, a thread hop per dependency per request for reading an attribute.


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_database(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


async def get_assistant(request: Request) -> Assistant:
    assistant: Assistant = request.app.state.assistant
    return assistant


async def get_reply_tasks(request: Request) -> ReplyTasks:
    tasks: ReplyTasks = request.app.state.reply_tasks
    return tasks


async def get_title_tasks(request: Request) -> TitleTasks:
    titles: TitleTasks = request.app.state.title_tasks
    return titles


async def get_reply_relay(request: Request) -> ReplyRelay:
    relay: ReplyRelay = request.app.state.reply_relay
    return relay


SettingsDep = Annotated[Settings, Depends(get_settings)]
DatabaseDep = Annotated[Database, Depends(get_database)]
AssistantDep = Annotated[Assistant, Depends(get_assistant)]
ReplyTasksDep = Annotated[ReplyTasks, Depends(get_reply_tasks)]
TitleTasksDep = Annotated[TitleTasks, Depends(get_title_tasks)]
ReplyRelayDep = Annotated[ReplyRelay, Depends(get_reply_relay)]
