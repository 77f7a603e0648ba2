"""Topic names of the external contract, with the optional prefix from settings."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TopicNames:
    """Every topic of the contract (section 1), prefixed."""

    prefix: str = ""

    def _name(self, suffix: str) -> str:
        return f"{self.prefix}statekeeper.{suffix}"

    @property
    def workflow_definitions(self) -> str:
        return self._name("workflow.definitions")

    @property
    def workflow_events(self) -> str:
        return self._name("workflow.events")

    @property
    def workflow_status(self) -> str:
        return self._name("workflow.status")

    @property
    def session_events(self) -> str:
        return self._name("session.events")

    @property
    def conversation_events(self) -> str:
        return self._name("conversation.events")

    @property
    def lifecycle_events(self) -> str:
        return self._name("lifecycle.events")

    @property
    def lifecycle_notices(self) -> str:
        return self._name("lifecycle.notices")

    @property
    def deadletter(self) -> str:
        return self._name("deadletter")

    def accepted_definitions(self, app_id: str) -> str:
        """Internal compacted topic of validated definitions, read whole by every worker."""
        return f"{self.prefix}{app_id}-workflow-definitions-accepted"

    def inputs(self) -> tuple[str, ...]:
        return (
            self.workflow_definitions,
            self.workflow_events,
            self.session_events,
            self.conversation_events,
            self.lifecycle_events,
        )

    def outputs(self) -> tuple[str, ...]:
        return (self.workflow_status, self.lifecycle_notices, self.deadletter)

    def topic_for_type(self, event_type: str) -> str | None:
        """The input topic an event type belongs on, or None for an unknown type."""
        family = event_type.partition(".")[0]
        return (
            {
                "workflow": self.workflow_events,
                "session": self.session_events,
                "conversation": self.conversation_events,
                "resource": self.lifecycle_events,
            }.get(family)
            if event_type != "workflow.define"
            else self.workflow_definitions
        )
