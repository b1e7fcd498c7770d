"""Windows and window messages for every program, console or GUI (Win32: USER32's messaging).

A window is a message endpoint owned by the thread that created it: a class (registered
with a window procedure), a title, an HWND unique on the machine, and its thread's
message queue. Top-level windows are found by :func:`find_window` / :func:`enum_windows`
and get broadcasts; message-only windows (``parent=HWND_MESSAGE``) are found only by
``find_window_ex(HWND_MESSAGE, ...)``. Nothing is drawn and no display is needed::

    from winipc import messages as M

    def proc(hwnd, msg, wparam, lparam):
        if msg == M.WM_COPYDATA:
            print("from pid", lparam.sender_pid, bytes(lparam.data))
            return 1
        return M.def_window_proc(hwnd, msg, wparam, lparam)

    M.register_class("MyReceiver", proc)
    win = M.create_window("MyReceiver", "inbox")
    M.run()                                   # until post_quit_message()

    # elsewhere:
    hwnd = M.find_window("MyReceiver", "inbox")
    M.send_copydata(hwnd, 7, b"hello")

Sent messages run only while the window's thread retrieves messages (get_message,
peek_message, run, pump_waiting_messages, its own send_message), as on Windows. See
docs/messages.md for the model, the security and the differences from Windows.
"""

from winipc.messages._api import (
    DEFAULT_TIMEOUT,
    dispatch_message,
    get_message,
    message_queue,
    peek_message,
    post_message,
    post_quit_message,
    pump_waiting_messages,
    register_window_message,
    run,
    send_copydata,
    send_message,
    send_message_timeout,
    translate_message,
)
from winipc.messages._queue import MessageQueue
from winipc.messages._types import (
    HWND_BROADCAST,
    HWND_MESSAGE,
    HWND_TOP,
    MAX_COPYDATA,
    MAX_POSTED_BYTES,
    PM_NOREMOVE,
    PM_REMOVE,
    POSTED_LIMIT,
    SMTO_ABORTIFHUNG,
    SMTO_BLOCK,
    SMTO_ERRORONEXIT,
    SMTO_NORMAL,
    SMTO_NOTIMEOUTIFNOTHUNG,
    WM_APP,
    WM_CLIPBOARDUPDATE,
    WM_CLOSE,
    WM_COPYDATA,
    WM_CREATE,
    WM_DESTROY,
    WM_DESTROYCLIPBOARD,
    WM_GETTEXT,
    WM_NULL,
    WM_QUIT,
    WM_RENDERALLFORMATS,
    WM_RENDERFORMAT,
    WM_SETTEXT,
    WM_TIMER,
    WM_USER,
    CopyData,
    Message,
    WindowInfo,
    WindowProc,
)
from winipc.messages._window import (
    MAX_TITLE,
    Window,
    add_destroy_hook,
    create_window,
    def_window_proc,
    enum_windows,
    find_window,
    find_window_ex,
    is_window,
    register_class,
    unregister_class,
    window_info,
)

#: create_window sends WM_CREATE to the window procedure itself (not WM_NCCREATE)
SENDS_CREATE = True

#: seconds without retrieving messages after which a thread is hung (SMTO_ABORTIFHUNG);
#: read by the SENDER at every send, so a test (or program) may lower it
HUNG_TIMEOUT = 5.0

__all__ = [
    "DEFAULT_TIMEOUT",
    "HUNG_TIMEOUT",
    "HWND_BROADCAST",
    "HWND_MESSAGE",
    "HWND_TOP",
    "MAX_COPYDATA",
    "MAX_POSTED_BYTES",
    "MAX_TITLE",
    "PM_NOREMOVE",
    "PM_REMOVE",
    "POSTED_LIMIT",
    "SENDS_CREATE",
    "SMTO_ABORTIFHUNG",
    "SMTO_BLOCK",
    "SMTO_ERRORONEXIT",
    "SMTO_NORMAL",
    "SMTO_NOTIMEOUTIFNOTHUNG",
    "WM_APP",
    "WM_CLIPBOARDUPDATE",
    "WM_CLOSE",
    "WM_COPYDATA",
    "WM_CREATE",
    "WM_DESTROY",
    "WM_DESTROYCLIPBOARD",
    "WM_GETTEXT",
    "WM_NULL",
    "WM_QUIT",
    "WM_RENDERALLFORMATS",
    "WM_RENDERFORMAT",
    "WM_SETTEXT",
    "WM_TIMER",
    "WM_USER",
    "CopyData",
    "Message",
    "MessageQueue",
    "Window",
    "WindowInfo",
    "WindowProc",
    "add_destroy_hook",
    "create_window",
    "def_window_proc",
    "dispatch_message",
    "enum_windows",
    "find_window",
    "find_window_ex",
    "get_message",
    "is_window",
    "message_queue",
    "peek_message",
    "post_message",
    "post_quit_message",
    "pump_waiting_messages",
    "register_class",
    "register_window_message",
    "run",
    "send_copydata",
    "send_message",
    "send_message_timeout",
    "translate_message",
    "unregister_class",
    "window_info",
]
