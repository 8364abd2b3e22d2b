# The learner's JupyterLab: `make lab` puts this folder on JUPYTER_CONFIG_PATH.
#
# A learner needs their notebook and nbgrader's Validate button, nothing of the
# instructor's. labconfig/page_config.json switches off the front-end plugins (the
# "Create Assignment" sidebar, the Nbgrader menu with the formgrader, the course and
# assignment lists, and JupyterLab's "get notified about Jupyter news" question); this
# file switches off the server side of the same tools. The course has no exchange
# (learners submit a file), so the assignment and course lists would only show errors.
# The validate_assignment extension stays: it answers the Validate button.
c = get_config()  # noqa: F821 (defined by traitlets when it loads this file)

c.ServerApp.jpserver_extensions.update({
    "nbgrader.server_extensions.formgrader": False,
    "nbgrader.server_extensions.course_list": False,
    "nbgrader.server_extensions.assignment_list": False,
    "nbgrader.server_extensions.validate_assignment": True,
})
# Offline course: no update or news checks from the server either.
c.LabApp.news_url = None
c.LabApp.check_for_updates_class = "jupyterlab.handlers.announcements.NeverCheckForUpdate"
