"""Request dependencies: the shared objects the lifespan put on `app.state`."""

from typing import Annotated

from fastapi import Depends, Request

from app.core.config import Settings
from app.db.engine import Database
from app.services.assistant import Assistant
from app.services.streaming import ReplyTasks


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_database(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


def get_assistant(request: Request) -> Assistant:
    assistant: Assistant = request.app.state.assistant
    return assistant


def get_reply_tasks(request: Request) -> ReplyTasks:
    tasks: ReplyTasks = request.app.state.reply_tasks
    return tasks


SettingsDep = Annotated[Settings, Depends(get_settings)]
DatabaseDep = Annotated[Database, Depends(get_database)]
AssistantDep = Annotated[Assistant, Depends(get_assistant)]
ReplyTasksDep = Annotated[ReplyTasks, Depends(get_reply_tasks)]
