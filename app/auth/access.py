"""Who is calling, and which sessions that lets them touch."""

from dataclasses import dataclass

from app.kit.errors import Forbidden


@dataclass(frozen=True, slots=True)
class Caller:
    """The identity a request acts as.

    `user_id` is the verified user (the token's `sub`); `sees_everything` is true for trusted
    backend callers (`service_role` tokens) and in open mode, where the caller names the user.
    """

    user_id: str | None
    sees_everything: bool

    @classmethod
    def open_mode(cls) -> "Caller":
        return cls(user_id=None, sees_everything=True)

    @classmethod
    def user(cls, user_id: str) -> "Caller":
        return cls(user_id=user_id, sees_everything=False)

    @classmethod
    def service(cls, user_id: str) -> "Caller":
        return cls(user_id=user_id, sees_everything=True)

    @property
    def owner_filter(self) -> str | None:
        """Restrict queries to this owner's sessions; None: no restriction."""
        return None if self.sees_everything else self.user_id

    def acting_for(self, requested_user_id: str | None) -> str | None:
        """The user a request works on behalf of: a user only for themselves; trusted callers
        for whoever they name (or nobody in particular)."""
        if self.sees_everything:
            return requested_user_id
        if requested_user_id is not None and requested_user_id != self.user_id:
            raise Forbidden("user_id may only name yourself")
        return self.user_id

    def require_everyone(self, what: str) -> None:
        """For reads across every user (the feedback export): the callers that may list
        everyone's sessions (`sees_everything`); anyone else is refused (403), as when naming
        another user."""
        if not self.sees_everything:
            raise Forbidden(f"only service callers may {what}")
